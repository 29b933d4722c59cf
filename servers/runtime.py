"""What every server entry point does before LitServe runs: exit cleanly on SIGTERM, die with
its parent, pin the torch thread count and keep freed memory (each function says why, with what was measured)."""

import ctypes
import logging
import multiprocessing
import os
import platform
import signal
import sys

log = logging.getLogger("servers")

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send `sig` to this process when the process that started it dies, so a
    killed pytest (or a killed server main process, for a worker) leaves nothing serving."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), sig)


def install_shutdown_handlers() -> None:
    """SIGTERM and SIGINT both raise KeyboardInterrupt, which LitServe turns into a graceful
    shutdown. LitServe installs no SIGTERM handler (its workers keep serving after the main
    process dies), and a process started in the background of a non-interactive shell
    inherits SIGINT as ignored, so both are set explicitly."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def prepare_main_process() -> None:
    install_shutdown_handlers()
    die_with_parent()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")


# glibc serves every allocation above its mmap threshold (128 KiB, raised only as far as the largest block
# freed so far) with a fresh mmap, and returns it on free: a CPU forward pass then re-faults its activations
# on every batch. efficientnet_lite0 at batch 8 took 550-740 thousand page faults per 1.5 s and ran 25-30 img/s
# on the 2-core AMD EPYC, 48-55 img/s with these settings (about 20 thousand faults), and which of the two a
# process got depended on what it had allocated before. No mmap for blocks, and a heap top up to 256 MiB kept:
# the activations of one batch are reused by the next, the same in every process.
# (name, mallopt parameter number from glibc's malloc.h, value)
KEEP_FREED_MEMORY = (("M_MMAP_MAX", -4, 0), ("M_TRIM_THRESHOLD", -1, 256 << 20))


def allocator_settings(libc_name: str) -> tuple:
    """The mallopt (name, parameter, value) settings for the C library `libc_name` (platform.libc_ver()[0]): glibc's
    only; other C libraries have no mallopt and keep their own policy."""
    return KEEP_FREED_MEMORY if libc_name == "glibc" else ()


def allocator_policy(libc_name: str) -> str:
    """What keep_freed_memory applies under `libc_name`, in words (recorded with every run)."""
    settings = allocator_settings(libc_name)
    if not settings:
        return f"C library default ({libc_name or 'unknown C library'}: no mallopt)"
    return f"{libc_name} " + ", ".join(f"{name}={value}" for name, _, value in settings)


def keep_freed_memory() -> str:
    """Apply allocator_settings to this process (workers, the FastAPI server, the harness's direct ceiling:
    every process that runs the model) and say what was applied."""
    libc_name = platform.libc_ver()[0]
    settings = allocator_settings(libc_name)
    if settings:
        libc = ctypes.CDLL("libc.so.6")
        for name, parameter, value in settings:
            if libc.mallopt(parameter, value) != 1:
                raise OSError(f"mallopt({name}, {value}) was refused")
    return allocator_policy(libc_name)


def serve(server, host: str, port: int) -> None:
    """Run a LitServer until SIGTERM/SIGINT. uvicorn waits uvicorn_graceful_timeout for open keep-alive
    connections at shutdown: LitServe's 30 s default turns every teardown after a load run into a 30 s wait."""
    server.uvicorn_graceful_timeout = 2
    try:
        server.run(host=host, port=port, log_level="warning", generate_client_file=False)
    except KeyboardInterrupt:  # a second signal during shutdown
        pass


def prepare_worker(threads: int) -> int:
    """Called in each inference worker's setup(): workers are spawned by the server's main
    process, so they die with it, and torch's thread count is set explicitly because its
    default (all cores) is 3-13x slower when server and client share two cores."""
    die_with_parent(signal.SIGKILL)
    keep_freed_memory()
    import torch

    torch.set_num_threads(threads)
    return torch.get_num_threads()


def resolve_device(requested: str) -> str:
    """'auto' means CUDA when torch sees a GPU, else CPU: the same command runs on both."""
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device_type(device) -> str:
    """'cuda' for 'cuda', 'cuda:0' or torch.device('cuda', 1); 'cpu' for 'cpu'. LitServe hands each worker
    f"{accelerator}:{index}" ('cuda:0'), so a device string is never compared with '==' 'cuda'."""
    import torch

    return torch.device(device).type


class BatchSizeCounts:
    """How many batches of each size every inference worker ran, so "batches never fill" is a
    figure. Shared memory created before LitServe spawns its workers (it travels with the API object):
    one row per worker, each written by that worker only; the HTTP process reads it for GET STATS_PATH."""

    def __init__(self, workers: int, max_batch_size: int):
        self.workers, self.width = workers, max_batch_size + 1
        self.counts = multiprocessing.get_context("spawn").RawArray("q", workers * self.width)

    def record(self, batch_size: int) -> None:
        worker = int(os.environ.get("LITSERVE_WORKER_ID", "0"))  # set by LitServe in each inference worker
        if 0 <= worker < self.workers and 0 < batch_size < self.width:
            self.counts[worker * self.width + batch_size] += 1

    def snapshot(self) -> dict:
        """{"workers": {"0": {"1": batches of 1, "8": batches of 8, ...}, ...}}: sizes never run left out."""
        rows = {}
        for worker in range(self.workers):
            row = self.counts[worker * self.width:(worker + 1) * self.width]
            rows[str(worker)] = {str(size): count for size, count in enumerate(row) if count}
        return {"workers": rows}


STATS_PATH = "/stats/batch-sizes"
SERVING_PATH = "/stats/serving"


def add_stats_routes(server, counts: BatchSizeCounts, accelerator: str, threads: int, fast_queue: bool, **facts) -> dict:
    """GET STATS_PATH (the batch sizes the workers ran) and GET SERVING_PATH (what actually serves) on a
    LitServer. litserve 0.2.19's LitServer.__init__ builds TransportConfig(transport_config=...) while the
    model's field is transport_type, so fast_queue=True leaves the mp transport in place: the facts say what
    the built config holds, not what was asked for."""
    import litserve as ls

    serving = {"accelerator": accelerator, "fast_queue": fast_queue, "transport": server.transport_config.transport_type,
               "threads_per_worker": threads, "litserve": getattr(ls, "__version__", "unknown"), **facts}
    server.app.add_api_route(STATS_PATH, counts.snapshot, methods=["GET"])
    server.app.add_api_route(SERVING_PATH, lambda: serving, methods=["GET"])
    return serving
