"""What every server entry point does before LitServe runs: exit cleanly on SIGTERM, die with
its parent, pin every native thread pool (torch, BLAS, OpenMP, MKL) and keep freed memory (each function says
why, with what was measured)."""

import ctypes
import json
import logging
import multiprocessing
import os
import platform
import signal
import sys
import time

import litserve as ls

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


# The variables the BLAS and OpenMP runtimes read when they load: a library the user's setup() loads after
# limit_thread_pools starts with `threads` threads too.
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
              "NUMEXPR_NUM_THREADS")


def limit_thread_pools(threads: int) -> None:
    """Every native thread pool of this process at `threads`: torch's, and through threadpoolctl each BLAS
    (OpenBLAS, MKL, BLIS) and OpenMP runtime loaded so far; THREAD_ENV for those loaded later. torch's own setting
    leaves numpy's BLAS at all cores: a numpy LitAPI ran 2 BLAS threads per worker where 1 torch thread was set,
    and with OPENBLAS_NUM_THREADS=1 its direct ceilings rose 2.2-15x and its c=8 req/s 1.3-4.5x (2-core Intel Xeon)."""
    import torch
    from threadpoolctl import threadpool_limits

    for name in THREAD_ENV:
        os.environ[name] = str(threads)
    threadpool_limits(limits=threads)  # as a call, not a block: the limits stay
    torch.set_num_threads(threads)


def thread_pools() -> list:
    """The thread pools this process runs now, as each library reports them: [{library, api, threads}, ...]
    (threadpoolctl's internal and user API, and torch's intra-op pool), with OpenBLAS's kernel architecture."""
    import torch
    from threadpoolctl import threadpool_info

    pools = [{"library": "torch", "api": "intra-op", "threads": torch.get_num_threads()}]
    for pool in threadpool_info():
        entry = {"library": pool["internal_api"], "api": pool["user_api"], "threads": pool["num_threads"]}
        pools.append(entry | ({"architecture": pool["architecture"]} if pool.get("architecture") else {}))
    return pools


def prepare_worker(threads: int) -> int:
    """Called in each inference worker's setup(): workers are spawned by the server's main
    process, so they die with it, and every thread pool is set explicitly (limit_thread_pools) because torch's
    default (all cores) is 3-13x slower when server and client share two cores."""
    die_with_parent(signal.SIGKILL)
    keep_freed_memory()
    limit_thread_pools(threads)
    import torch

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


def spin(seconds: float) -> None:
    """Keep this core busy for `seconds`: work, as a slower model would do it (a sleep would free the core for
    another worker, and slow the server by less than asked)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class Slowdown:
    """Test-only: the server made slower by a fraction of its own work, so that "3% slower" means the same on any
    machine (the A/B's reach is measured with it: fixtures/ab.py --head-option slowdown=0.03). after(started)
    spins `fraction` of the time since `started`; as a transformers logits processor it spins `fraction` of each
    decode step (the time since its previous call, the first one since generation began)."""

    def __init__(self, fraction: float):
        self.fraction = fraction
        self.last = time.perf_counter()

    def after(self, started: float) -> None:
        spin(self.fraction * (time.perf_counter() - started))

    def __call__(self, input_ids, scores):
        self.after(self.last)
        self.last = time.perf_counter()
        return scores


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


class ThreadPoolReport:
    """The thread pools each inference worker runs once set up (thread_pools), so the record says what ran, not
    what was asked: a JSON text per worker in shared memory created before LitServe spawns its workers, each row
    written by its worker only (after its setup), read by the HTTP process for GET SERVING_PATH."""

    ROW = 4096  # bytes of JSON per worker: a few pools of a few fields each

    def __init__(self, workers: int):
        self.workers = workers
        self.rows = multiprocessing.get_context("spawn").RawArray("c", workers * self.ROW)

    def record(self) -> None:
        worker = int(os.environ.get("LITSERVE_WORKER_ID", "0"))
        if 0 <= worker < self.workers:
            text = json.dumps(thread_pools()).encode()[:self.ROW - 1]
            self.rows[worker * self.ROW:worker * self.ROW + len(text) + 1] = text + b"\0"

    def snapshot(self) -> dict:
        """worker -> its pools, for the workers that have recorded them."""
        found = {}
        for worker in range(self.workers):
            text = bytes(self.rows[worker * self.ROW:(worker + 1) * self.ROW]).split(b"\0", 1)[0]
            if text:
                found[str(worker)] = json.loads(text)
        return found


class PrepareWorker(ls.Callback):
    """A LitServe callback running prepare_worker in each inference worker before its setup(): the server's
    settings stay out of the LitAPI class, which then runs unchanged in another process (the harness's direct
    ceiling builds and times it there)."""

    def __init__(self, threads: int):
        self.threads = threads

    def on_before_setup(self, lit_api, *args, **kwargs):
        prepare_worker(self.threads)


class RecordThreadPools(ls.Callback):
    """A LitServe callback recording each worker's thread pools once its setup() has run (a library loaded there
    counts); it travels to the workers with its shared rows."""

    def __init__(self, pools: ThreadPoolReport):
        self.pools = pools

    def on_after_setup(self, lit_api, *args, **kwargs):
        self.pools.record()


STATS_PATH = "/stats/batch-sizes"
SERVING_PATH = "/stats/serving"


def add_stats_routes(server, counts: BatchSizeCounts, accelerator: str, threads: int, fast_queue: bool,
                     pools: ThreadPoolReport, **facts) -> dict:
    """GET STATS_PATH (the batch sizes the workers ran) and GET SERVING_PATH (what actually serves, the thread pools
    each worker runs among it) on a LitServer. litserve 0.2.19's LitServer.__init__ builds
    TransportConfig(transport_config=...) while the model's field is transport_type, so fast_queue=True leaves the
    mp transport in place: the facts say what the built config holds, not what was asked for."""
    serving = {"accelerator": accelerator, "fast_queue": fast_queue, "transport": server.transport_config.transport_type,
               "threads_per_worker": threads, "litserve": getattr(ls, "__version__", "unknown"), **facts}
    server.app.add_api_route(STATS_PATH, counts.snapshot, methods=["GET"])
    server.app.add_api_route(SERVING_PATH, lambda: {**serving, "thread_pools": pools.snapshot()}, methods=["GET"])
    return serving
