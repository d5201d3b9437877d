"""The memory server's render thread: lower priority, one thread, results and errors returned."""

from __future__ import annotations

import os
import sys
import threading
import time

import numba
import pytest

from m3_core.errors import InvalidInputError
from m3_ros.render_thread import RenderBusyError, RenderThread, thread_nice

linux = pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice is Linux's")


@linux
def test_renders_run_on_one_thread_that_is_nicer_than_the_caller():
    caller = thread_nice(threading.get_native_id())
    rt = RenderThread(nice=7, kernel_threads=1)
    try:
        assert rt.niced is True
        ran_on = {rt.run(threading.get_native_id) for _ in range(3)}
        assert ran_on == {rt.native_id} != {threading.get_native_id()}
        assert rt.run(lambda: thread_nice(threading.get_native_id())) == min(caller + 7, 19)
        assert thread_nice(threading.get_native_id()) == caller  # the caller is untouched
        assert os.getpriority(os.PRIO_PROCESS, 0) == caller
    finally:
        rt.close()


def test_kernel_threads_capped_inside_renders_only():
    rt = RenderThread(nice=0, kernel_threads=1)
    try:
        assert rt.niced is True  # nothing asked, nothing to fail
        assert rt.run(numba.get_num_threads) == 1
        assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS
    finally:
        rt.close()


def test_results_and_errors_come_back_to_the_caller():
    rt = RenderThread(nice=3)
    try:
        assert rt.run(lambda a, b=0: a + b, 2, b=5) == 7

        def bad():
            raise InvalidInputError("render refused")

        with pytest.raises(InvalidInputError, match="render refused"):
            rt.run(bad)
        assert rt.run(lambda: "still serving") == "still serving"  # an error kills nothing
    finally:
        rt.close()


def test_closed_thread_refuses_and_bad_settings_are_refused():
    rt = RenderThread(nice=1)
    rt.close()
    with pytest.raises(RuntimeError):
        rt.run(lambda: 1)
    with pytest.raises(InvalidInputError, match="nice"):
        RenderThread(nice=20)
    with pytest.raises(InvalidInputError, match="kernel threads"):
        RenderThread(kernel_threads=-1)


def test_a_render_past_max_pending_is_refused_without_waiting():
    rt = RenderThread(nice=0, max_pending=2)
    release, started = threading.Event(), threading.Barrier(2)
    results: list = []

    def slow():
        release.wait(30)
        return "done"

    def first():
        started.wait()
        results.append(rt.run(slow))

    callers = [
        threading.Thread(target=first),
        threading.Thread(target=lambda: results.append(rt.run(slow))),
    ]
    try:
        callers[0].start()
        started.wait()
        callers[1].start()
        deadline = time.monotonic() + 10
        while rt.pending < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert rt.pending == 2  # one running, one waiting for the thread
        t0 = time.monotonic()
        with pytest.raises(
            RenderBusyError, match=r"busy: 2 renders in flight \(max_pending_renders 2\)"
        ):
            rt.run(lambda: "never runs")
        assert time.monotonic() - t0 < 1.0  # refused at once, not after the others
        release.set()
        for c in callers:
            c.join(10)
        assert results == ["done", "done"] and rt.pending == 0
        assert rt.run(lambda: "served again") == "served again"
    finally:
        release.set()
        rt.close()
    with pytest.raises(InvalidInputError, match="max pending"):
        RenderThread(max_pending=0)


def test_the_time_budget_counts_the_wait_for_the_render_thread():
    from m3_ros.memory_services import Budget

    Budget(1.0).check("start")  # fresh: within
    with pytest.raises(InvalidInputError, match=r"over the time budget of 1 s"):
        Budget(1.0, start=time.monotonic() - 1.5).check("start")  # waited 1.5 s in line
