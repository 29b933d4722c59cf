"""A LitServe API that does nothing: the harness's own tests start it (1-3 s) instead of a model.

    python -m servers.noop --port 8000 [--setup-delay S] [--fail-setup] [--max-batch-size N]
                                  [--workers-per-device N] [--crash-later-workers PATH] [--fork-helper S]
"""

import argparse
import os
import time

import litserve as ls

from servers.runtime import prepare_main_process, prepare_worker, serve


class NoopAPI(ls.LitAPI):
    def __init__(self, setup_delay_s: float, fail_setup: bool, max_batch_size: int, crash_later_workers: str = None,
                 fork_helper_s: float = 0.0):
        super().__init__(max_batch_size=max_batch_size, batch_timeout=0.001 if max_batch_size > 1 else 0.0)
        self.setup_delay_s = setup_delay_s
        self.fail_setup = fail_setup
        self.crash_later_workers = crash_later_workers
        self.fork_helper_s = fork_helper_s

    def setup(self, device):
        prepare_worker(threads=1)
        if self.fail_setup:
            raise RuntimeError("noop server asked to fail in setup (--fail-setup)")
        if self.crash_later_workers:
            try:  # the first worker here creates the file and serves; every later one dies, as a crash would
                os.close(os.open(self.crash_later_workers, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                print("noop worker crashing in setup (--crash-later-workers)", flush=True)
                os._exit(3)
        if self.fork_helper_s and os.fork() == 0:
            # A helper forked by the worker (as a library running a subprocess does): until it execs, or for
            # its whole life if it never does, it shows the worker's own command line. It exits on its own.
            time.sleep(self.fork_helper_s)
            os._exit(0)
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
    p.add_argument("--crash-later-workers", help="test-only: the first worker creates this file; later ones exit in setup")
    p.add_argument("--fork-helper", type=float, default=0.0,
                   help="test-only: each worker forks a child in setup that lives this many seconds, then exits")
    args = p.parse_args(argv)
    api = NoopAPI(args.setup_delay, args.fail_setup, args.max_batch_size, args.crash_later_workers, args.fork_helper)
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=args.workers_per_device)
    serve(server, "127.0.0.1", args.port)


if __name__ == "__main__":
    main()
