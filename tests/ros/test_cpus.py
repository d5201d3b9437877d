"""The ``cpus`` parameter: a node and every thread it has or starts run on the CPUs named."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from m3_core.errors import InvalidInputError
from m3_ros.cpus import cpu_set
from tests.conftest import REPO
from tests.ros.conftest import wait_for

linux = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux affinity")


def test_cpu_sets_parse_and_bad_text_is_refused():
    assert cpu_set("") == set() and cpu_set(" ") == set()
    assert cpu_set("0,2-3") == {0, 2, 3} and cpu_set("1, 1-2") == {1, 2}
    for bad in ("x", "1-", "3-1", "-1", "0;1", "1.5", "1-2-3"):
        with pytest.raises(InvalidInputError, match="not a CPU number or range"):
            cpu_set(bad)


def thread_cpus(pid: int) -> dict[int, set[int]]:
    return {
        int(t): os.sched_getaffinity(int(t))
        for t in os.listdir(f"/proc/{pid}/task")
        if os.path.exists(f"/proc/{pid}/task/{t}")
    }


PIN = """
import os, threading, time
from m3_ros.cpus import pin_process
stop = threading.Event()
before = threading.Thread(target=stop.wait); before.start()  # a thread from before the pin
pin_process({cpu})
seen = []
after = threading.Thread(target=lambda: seen.append(os.sched_getaffinity(0))); after.start()
after.join()
tasks = {{int(t): os.sched_getaffinity(int(t)) for t in os.listdir("/proc/self/task")}}
stop.set(); before.join()
print(sorted(set(map(frozenset, tasks.values())), key=sorted), seen)
"""


@linux
def test_every_thread_old_and_new_is_pinned():
    cpu = min(os.sched_getaffinity(0))
    out = subprocess.run(
        [sys.executable, "-c", PIN.format(cpu={cpu})], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(f"[frozenset({{{cpu}}})] "), out.stdout  # all of them
    assert out.stdout.strip().endswith(f" [{{{cpu}}}]"), out.stdout  # and a later thread


@linux
def test_memory_server_runs_on_its_cpus_and_refuses_bad_ones(trained_memory, spawn):
    pytest.importorskip("rclpy")
    memory, _ = trained_memory
    cpu = min(os.sched_getaffinity(0))
    server = spawn("memory_server", {"memory_path": str(memory), "cpus": str(cpu)})
    wait_for(lambda: "loaded memory" in server.output(), 90, "the server", server)
    threads = thread_cpus(server.proc.pid)
    assert len(threads) > 3 and all(c == {cpu} for c in threads.values()), threads
    server.stop()
    bad = spawn("memory_server", {"memory_path": str(memory), "cpus": "4096"})
    wait_for(lambda: "configure failed: cpus: [4096] not available" in bad.output(), 60, "it", bad)
    assert bad.alive()  # unconfigured, not dead: a lifecycle manager may configure it again


@linux
def test_trainer_with_bad_cpus_exits_with_one_line(spawn, tmp_path):
    pytest.importorskip("rclpy")
    trainer = spawn("trainer", {"memories_dir": str(tmp_path / "mem"), "cpus": "0-x"})
    trainer.proc.wait(timeout=60)
    assert trainer.proc.returncode == 2
    lines = trainer.output().strip().splitlines()
    assert lines[-1] == "error: cpus: '0-x' is not a CPU number or range", lines[-3:]
    assert "Traceback" not in trainer.output()
