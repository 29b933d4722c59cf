"""A LitServe API that does nothing: the harness's own tests start it (1-3 s) instead of a model.

    python -m servers.noop --port 8000 [--setup-delay S] [--fail-setup] [--max-batch-size N]
"""

import argparse
import time

import litserve as ls

from servers.runtime import prepare_main_process, prepare_worker


class NoopAPI(ls.LitAPI):
    def __init__(self, setup_delay_s: float, fail_setup: bool, max_batch_size: int):
        super().__init__(max_batch_size=max_batch_size, batch_timeout=0.001 if max_batch_size > 1 else 0.0)
        self.setup_delay_s = setup_delay_s
        self.fail_setup = fail_setup

    def setup(self, device):
        prepare_worker(threads=1)
        if self.fail_setup:
            raise RuntimeError("noop server asked to fail in setup (--fail-setup)")
        time.sleep(self.setup_delay_s)

    def decode_request(self, request):
        return request

    def predict(self, x):
        return x

    def encode_response(self, output):
        return {"output": output}


def main(argv=None):
    prepare_main_process()
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--setup-delay", type=float, default=0.0, help="seconds each worker sleeps in setup")
    p.add_argument("--fail-setup", action="store_true")
    p.add_argument("--max-batch-size", type=int, default=1)
    p.add_argument("--workers-per-device", type=int, default=1)
    args = p.parse_args(argv)
    api = NoopAPI(args.setup_delay, args.fail_setup, args.max_batch_size)
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=args.workers_per_device)
    server.uvicorn_graceful_timeout = 2
    try:
        server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
