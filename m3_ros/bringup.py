"""``m3-bringup``: the pip-route twin of ``ros2 launch m3_ros memory.launch.py``.

Starts the same nodes with the same YAML (config/m3_params.yaml, overlaid with
config/robots/<robot>.yaml for ``--robot``) as separate processes
(``python -m m3_ros.<node> --ros-args --params-file ...``), restarts a node that crashes (with
back-off that starts over once a node has run ``--healthy-after`` seconds; the others keep
running and are watched while one waits, like launch's ``respawn``), and stops them all on
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

from m3_ros.nodes import NODES

FIRST_DELAY_S = 1.0  # restart delay after a crash of a node that had been healthy
MAX_DELAY_S = 30.0


def restart_delay(crashes: int) -> float:
    """Seconds before restarting a node after its ``crashes``-th crash in a row (>= 1):
    1, 2, 4, ... doubling up to 30 s."""
    return min(MAX_DELAY_S, FIRST_DELAY_S * 2.0 ** min(max(crashes, 1) - 1, 10))


def crashes_in_a_row(previous: int, ran_for_s: float, healthy_after_s: float) -> int:
    """The crash count after a node that ran ``ran_for_s`` seconds exits: a run of at least
    ``healthy_after_s`` seconds was healthy, so the count (and the delay) starts over at 1."""
    return 1 if ran_for_s >= healthy_after_s else previous + 1


def default_params_file() -> str:
    """config/m3_params.yaml of the installed package (share/m3_ros), else of this checkout."""
    try:
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory("m3_ros")) / "config" / "m3_params.yaml"
        if installed.is_file():
            return str(installed)
    except (ImportError, LookupError, ValueError, OSError):  # no ament index: a checkout
        pass
    return str(Path(__file__).resolve().parents[1] / "config" / "m3_params.yaml")


def robot_profiles() -> dict[str, Path]:
    """Robot driver overlays (config/robots/<name>.yaml) beside the default params file."""
    folder = Path(default_params_file()).parent / "robots"
    return {f.stem: f for f in sorted(folder.glob("*.yaml"))}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="m3-bringup", description=__doc__.splitlines()[0])
    p.add_argument("--params-file", default=None, help="node parameters (YAML)")
    p.add_argument("--robot", default="", help="robot profile: " + ", ".join(robot_profiles()))
    p.add_argument("--memory-path", default="", help="memory folder for the memory server")
    p.add_argument("--use-sim-time", action="store_true", help="use /clock")
    p.add_argument("--nodes", default=",".join(NODES), help=f"comma list of {', '.join(NODES)}")
    p.add_argument("--no-respawn", action="store_true", help="do not restart crashed nodes")
    p.add_argument(
        "--healthy-after",
        type=float,
        default=30.0,
        metavar="S",
        help="a node that ran this many seconds restarts after the first delay again (30)",
    )
    return p.parse_args(argv)


def node_command(name: str, args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", f"m3_ros.{name}", "--ros-args", "--params-file", args.params_file]
    if args.robot_file:  # a later params file overrides an earlier one (as in launch_ros)
        cmd += ["--params-file", str(args.robot_file)]
    if args.use_sim_time:
        cmd += ["-p", "use_sim_time:=true"]
    if name == "memory_server" and args.memory_path:
        cmd += ["-p", f"memory_path:={args.memory_path}"]
    return cmd


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.params_file = args.params_file or default_params_file()
    names = [n.strip() for n in args.nodes.split(",") if n.strip()]
    unknown = sorted(set(names) - set(NODES))
    robots = robot_profiles()
    what = ""
    if unknown:
        what = f"unknown nodes {unknown}"
    elif not Path(args.params_file).is_file():
        what = f"no params file {args.params_file}"
    elif args.robot and args.robot not in robots:
        what = f"unknown robot {args.robot!r}: known robots are {', '.join(robots)}"
    elif not math.isfinite(args.healthy_after) or args.healthy_after < 0:
        what = f"--healthy-after must be a finite number of seconds >= 0, got {args.healthy_after}"
    if what:
        print(f"m3-bringup: error: {what}", file=sys.stderr)
        return 2
    args.robot_file = robots[args.robot] if args.robot else None
    procs = {n: subprocess.Popen(node_command(n, args)) for n in names}
    started = {n: time.monotonic() for n in names}
    crashes = {n: 0 for n in names}
    due: dict[str, float] = {}  # node -> when to start it again
    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print(f"m3-bringup: started {', '.join(names)} (Ctrl-C stops)", flush=True)
    while not stopping:
        time.sleep(0.2)
        now = time.monotonic()
        for n, proc in list(procs.items()):
            code = proc.poll()
            if code is None or stopping:
                continue
            del procs[n]
            if args.no_respawn:
                print(f"m3-bringup: {n} exited with {code}", file=sys.stderr, flush=True)
                continue
            crashes[n] = crashes_in_a_row(crashes[n], now - started[n], args.healthy_after)
            delay = restart_delay(crashes[n])
            due[n] = now + delay
            print(
                f"m3-bringup: {n} exited ({code}) after {now - started[n]:.1f}s; "
                f"restart in {delay:.1f}s",
                file=sys.stderr,
                flush=True,
            )
        for n, when in list(due.items()):
            if now >= when and not stopping:
                del due[n]
                procs[n] = subprocess.Popen(node_command(n, args))
                started[n] = time.monotonic()
        if not procs and not due:
            return 1
    for proc in procs.values():
        proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 10
    for proc in procs.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
