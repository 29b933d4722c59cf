"""Every process that runs a model keeps freed memory (servers.runtime.keep_freed_memory): without it glibc
returns each batch's activations to the kernel and the next batch page-faults them back, which made the
CPU direct ceiling and the served rate depend on what a process had allocated before."""

import subprocess
import sys

from fixtures.drive.server import REPO_ROOT
from servers.runtime import allocator_policy, allocator_settings

BLOCK_FLOATS = 10 << 20  # a 40 MiB block: above any mmap threshold glibc would pick by itself
BLOCK_PAGES = (BLOCK_FLOATS * 4) // 4096

FAULTS_OF_REPEATED_BLOCKS = """
import resource, sys
if sys.argv[1] == "worker":
    from servers.runtime import prepare_worker
    prepare_worker(1)
import torch
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def one_batch():  # allocated, written, freed: one batch's activations
    block = torch.empty({n})
    block.fill_(1.0)
    del block
for _ in range(10):  # warm-up: the heap settles (aligned blocks do not fit the first holes exactly)
    one_batch()
before = faults()
for _ in range(10):
    one_batch()
print(faults() - before)
""".format(n=BLOCK_FLOATS)


def faults_of_ten_blocks(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", FAULTS_OF_REPEATED_BLOCKS, mode], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split()[-1])


def test_a_worker_reuses_freed_blocks_instead_of_faulting_them_back():
    default, worker = faults_of_ten_blocks("default"), faults_of_ten_blocks("worker")
    # The control shows what the test detects: glibc's default faults most of every block back in.
    assert default > 5 * BLOCK_PAGES, f"glibc default took only {default} faults for 10 blocks of {BLOCK_PAGES} pages"
    assert worker < BLOCK_PAGES, f"a prepared worker took {worker} page faults for 10 reused blocks"


def test_the_allocator_policy_is_glibcs_only_and_says_what_it_sets():
    assert [name for name, _, _ in allocator_settings("glibc")] == ["M_MMAP_MAX", "M_TRIM_THRESHOLD"]
    assert allocator_settings("musl") == () and allocator_settings("") == ()
    assert allocator_policy("glibc") == f"glibc M_MMAP_MAX=0, M_TRIM_THRESHOLD={256 << 20}"
    assert "no mallopt" in allocator_policy("")
