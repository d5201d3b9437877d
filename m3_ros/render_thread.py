"""The memory server's render thread: renders run here, at a lower CPU priority.

A RenderFeatureAt takes a core for hundreds of milliseconds; a GroundObject answer takes a few.
On the executor's threads both compete as equals, so on a small robot computer every render
delays the fast answers queued behind it. Here renders run one at a time on one thread whose
scheduling priority is lowered by ``nice`` (Linux keeps a nice value per thread, and threads
this one starts, such as a kernel's worker threads, inherit it): when the cores are busy the
scheduler prefers the threads that answer GroundObject, and a render only slows down. Its
compiled kernels use at most ``kernel_threads`` threads. Where the platform has no per-thread
priority the thread runs at normal priority, and ``niced`` says so.

At most ``max_pending`` renders are in flight (one running, the others waiting for it); a
further one is refused at once (``RenderBusyError``) instead of queueing behind them, so a
caller learns in milliseconds that the server is busy rather than after its own timeout.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from m3_core.errors import InvalidInputError
from m3_core.splat.threads import kernel_threads

T = TypeVar("T")


class RenderBusyError(InvalidInputError):
    """``max_pending`` renders are already in flight."""


def thread_nice(native_id: int) -> int:
    """The nice value of one thread of this process (Linux: per thread)."""
    return os.getpriority(os.PRIO_PROCESS, native_id)


class RenderThread:
    """``run(fn, ...)`` calls ``fn`` on the render thread and returns its result (or raises
    its exception) to the calling thread, which waits without using the CPU."""

    def __init__(self, nice: int = 10, kernel_threads: int = 1, max_pending: int = 2) -> None:
        if not 0 <= nice <= 19:
            raise InvalidInputError(f"render nice must be in [0, 19], got {nice}")
        if kernel_threads < 0:
            raise InvalidInputError(f"render kernel threads must be >= 0, got {kernel_threads}")
        if max_pending < 1:
            raise InvalidInputError(f"max pending renders must be >= 1, got {max_pending}")
        self.nice, self.kernel_threads, self.max_pending = nice, kernel_threads, max_pending
        self.pending = 0  # renders in flight: running or waiting for the thread
        self._lock = threading.Lock()
        self.niced: bool | None = None  # set once the thread has started
        self.native_id: int | None = None
        self._started = threading.Event()
        self._pool = ThreadPoolExecutor(1, "m3-render", initializer=self._start)
        self._pool.submit(self._started.wait).result()  # start it now: priority known

    def _start(self) -> None:
        self.native_id = threading.get_native_id()
        self.niced = self.nice == 0
        if self.nice and hasattr(os, "setpriority"):
            try:  # nice grows by self.nice for this thread only (never needs privileges)
                base = thread_nice(self.native_id)
                os.setpriority(os.PRIO_PROCESS, self.native_id, min(base + self.nice, 19))
                self.niced = True
            except OSError:
                self.niced = False
        self._started.set()

    def run(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """Raises RenderBusyError, without waiting, when ``max_pending`` are in flight."""

        def call() -> T:
            with kernel_threads(self.kernel_threads):
                return fn(*args, **kwargs)

        with self._lock:
            if self.pending >= self.max_pending:
                raise RenderBusyError(
                    f"busy: {self.pending} renders in flight (max_pending_renders "
                    f"{self.max_pending}); try again later"
                )
            self.pending += 1
        try:
            return self._pool.submit(call).result()
        finally:
            with self._lock:
                self.pending -= 1

    def close(self) -> None:
        """Refuse new renders; the one running finishes in the background."""
        self._pool.shutdown(wait=False, cancel_futures=True)
