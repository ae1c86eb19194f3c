"""Keep freed memory in the process heap between training steps (glibc only).

A CPU training step allocates and frees the same activations every time, several MB each. glibc
serves blocks that large from fresh ``mmap`` pages or returns the top of its heap to the kernel when
they are freed, so the next step writes to new pages and takes a page fault (a kernel entry and a
page zeroed) for every 4 KiB: on the development CPU 2 000-15 000 faults and up to 44 ms of system
time per default step. Raising both thresholds keeps those pages in the heap for reuse; the process
then holds on to its peak memory, which a training loop reaches every step anyway.

``vidgan train`` does this for CPU runs (``trainer.retain_heap``). CUDA tensors have their own
caching allocator and are not affected.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, <malloc.h>
MMAP_THRESHOLD = 32 << 20  # glibc's upper limit on 64-bit: larger blocks are always mmap'ed
TRIM_THRESHOLD = 1 << 30   # free heap top kept before any is given back


def retain_freed_memory() -> bool:
    """Keep blocks up to 32 MiB and up to 1 GiB of free heap top in the process (``mallopt``).

    Returns whether it took effect: False (and no change) where the C library is not glibc.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        log.debug("mallopt refused the heap thresholds; allocation behaviour unchanged")
        return False
    return True
