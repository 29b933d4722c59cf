"""What every server entry point does before LitServe runs: exit cleanly on SIGTERM, die with
its parent, and pin the torch thread count (see ../shared/NOTES-stack.md for the measurements)."""

import ctypes
import logging
import os
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


def prepare_worker(threads: int) -> int:
    """Called in each inference worker's setup(): workers are spawned by the server's main
    process, so they die with it, and torch's thread count is set explicitly because its
    default (all cores) is 3-13x slower when server and client share two cores."""
    die_with_parent(signal.SIGKILL)
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
