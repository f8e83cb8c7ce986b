"""utils.memory: glibc keeps freed pages, so repeated big allocations stop page-faulting."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PROBE = textwrap.dedent("""
    import ctypes, resource, sys
    sys.path.insert(0, {root!r})
    if sys.argv[1] == "retain":
        from utils.memory import retain_freed_memory
        assert retain_freed_memory() and retain_freed_memory()  # idempotent
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size = 64 << 20  # above glibc's largest mmap threshold
    def touch():
        p = libc.malloc(size)
        ctypes.memset(p, 1, size)
        libc.free(p)
    touch()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        touch()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(mode: str) -> int:
    code = _PROBE.format(root=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_freed_memory_is_reused_without_page_faults() -> None:
    pages = 5 * (64 << 20) // 4096
    assert _faults("default") > pages // 2  # glibc maps and unmaps the block every time
    assert _faults("retain") < pages // 20  # the same pages serve every allocation
