"""The memory server's render thread: lower priority, one thread, results and errors returned."""

from __future__ import annotations

import os
import sys
import threading

import numba
import pytest

from m3_core.errors import InvalidInputError
from m3_ros.render_thread import RenderThread, thread_nice

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
