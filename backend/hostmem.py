"""Host memory that a training step reuses instead of asking the kernel for again.

glibc's allocator hands blocks above its mmap threshold to the kernel on every free and maps
fresh pages for the next request; the threshold starts at 128 KiB and moves with what the
process happened to free before, and memory freed at the top of a heap beyond the trim
threshold is returned as well. A GRPO step allocates and frees the same tensors every step
(activations, gradients, the rollout's buffers), so on CPU a step can fault in thousands of
fresh zeroed pages: on the embedded default 1,800 to 7,200 page faults per step from one run
to the next of the same code, 5-16 ms of kernel time in a ~100 ms step, depending on where
the threshold happened to settle (`docs/benchmarks.md`, "host memory kept from step to step").

`reuse_freed_memory` fixes both thresholds (mmap: 32 MiB, the most glibc allows on 64-bit;
trim: 256 MiB), so blocks up to 32 MiB come from the heap and freed memory stays there for the
next step. Larger blocks are still mapped per request. A no-op where the C library is not
glibc; `run.reuse_host_memory = false` leaves the allocator as it is.
"""

from __future__ import annotations

import ctypes
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's maximum on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 256 * 1024 * 1024


def reuse_freed_memory() -> str:
    """Fix glibc's thresholds (see the module doc); returns what was done, for the run's log."""
    if platform.libc_ver()[0] != "glibc":
        return "host allocator left as it is (not glibc)"
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return "host allocator left as it is (mallopt not found)"
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not ok:
        return "host allocator left as it is (mallopt refused the thresholds)"
    return f"host allocator: freed blocks up to {MMAP_THRESHOLD >> 20} MiB kept for reuse (trim above {TRIM_THRESHOLD >> 20} MiB)"
