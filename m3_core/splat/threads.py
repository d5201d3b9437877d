"""How many threads the compiled CPU kernels of the calling thread may use.

numba's thread count is per calling thread: a server that renders in one thread can cap that
thread's kernels (``with kernel_threads(1): ...``) and keep the other cores for the threads
that answer fast requests, while its other threads keep the full count.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from m3_core.errors import InvalidInputError


@contextmanager
def kernel_threads(n: int) -> Iterator[int]:
    """Within the block, this thread's compiled kernels use at most ``n`` threads (0: all the
    process has); yields the count in force. The previous count is restored after."""
    import numba

    if n < 0:
        raise InvalidInputError(f"kernel threads must be >= 0 (0: all), got {n}")
    old = numba.get_num_threads()
    want = numba.config.NUMBA_NUM_THREADS if n == 0 else min(n, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(want)
    try:
        yield want
    finally:
        numba.set_num_threads(old)
