"""Freed kernel memory is reused, not unmapped and faulted back in on every call."""

import platform
import resource

import numpy as np
import pytest

from molpipe.kernels.dense import dense_fwd
from molpipe.runtime.memory import keep_freed_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_repeated_kernel_outputs_do_not_fault_pages_in_again():
    assert keep_freed_memory()                     # set once, as make_engine and the CLI do
    X = np.ones((2000, 128), np.float32)            # 1 MB outputs, far above glibc's 128 KB
    W, b = np.ones((128, 128), np.float32), np.zeros(128, np.float32)
    dense_fwd(X, W, b)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(50):
        Y = dense_fwd(X, W, b)
        Y[:] += 1.0                                 # touch every page of the output
        del Y
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < 50 * 256 // 10, faults           # munmap + mmap would fault 256 pages each time


def test_importing_the_kernels_tunes_nothing():
    """malloc tuning is an explicit call at start-up, not an import side effect."""
    import subprocess
    import sys

    code = ("import molpipe.kernels, molpipe.runtime.memory as m; "
            "assert m._done is None, m._done; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr

