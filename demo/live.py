"""The demo's live answers: while the robot walks, the trainer folds each streamed keyframe into
a live memory and announces it; the memory server swaps it in. :class:`LivePoller` asks
GroundObject for every object (and the absent one) about once a second from the start of the
walk and records when each was first answered within ``HIT_RADIUS`` of its true box, to compare
with when the robot's camera first saw it (:func:`first_sightings`)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from demo.stages import HIT_RADIUS, to_box, wait_until

MIN_PIXELS = 0.005  # an object is "seen" once it covers this fraction of a view


def first_sightings(frames, rate: float) -> dict[str, float]:
    """Seconds from the start of the walk to the first frame that shows each object on at
    least ``MIN_PIXELS`` of the image (frames are published ``1 / rate`` s apart)."""
    seen: dict[str, float] = {}
    for k, f in enumerate(frames):
        need = MIN_PIXELS * f.rgb.shape[0] * f.rgb.shape[1]
        for label, n in f.visible.items():
            if n >= need and label not in seen:
                seen[label] = round(k / rate, 2)
    return seen


class LivePoller:
    """A thread that grounds every query about every ``period`` s until :meth:`stop`."""

    def __init__(self, client, truth: list[dict], absent: str, period: float = 1.0) -> None:
        self.client, self.absent, self.period = client, absent, period
        self.truth = {t["label"]: t for t in truth}
        self.answered: dict[str, dict] = {}  # label -> first correct answer
        self.false: list[dict] = []  # answers for the absent object
        self.calls = 0
        self.t0 = time.monotonic()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="live_poller", daemon=True)

    def start(self, t0: float) -> None:
        """Start polling; times are seconds from ``t0`` (time.monotonic of the walk's start)."""
        self.t0 = t0
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)

    def _run(self) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            for text in [t for t in self.truth if t not in self.answered] + [self.absent]:
                self._ask(text)
            self.stopping.wait(max(0.0, self.period - (time.monotonic() - started)))

    def _ask(self, text: str) -> None:
        from m3_ros.srv import GroundObject

        res = self.client.call(GroundObject, "/memory_server/ground_object",
                               GroundObject.Request(text=text, max_results=1),
                               timeout=10.0)  # fmt: skip
        self.calls += 1
        now = round(time.monotonic() - self.t0, 2)
        if res is None or not res.success or not res.objects:
            return
        c = res.objects[0].center.pose.position
        center = [c.x, c.y, c.z]
        score = round(float(res.objects[0].score), 3)
        answer = {"t_s": now, "score": score, "memory": res.message}
        if text == self.absent:
            self.false.append(answer)
        elif (dist := to_box(center, self.truth[text])) <= HIT_RADIUS:
            answer["to_box_m"] = round(dist, 3)
            self.answered[text] = answer

    def rows(self, sightings: dict[str, float]) -> list[dict]:
        """Per object: first seen (s), first correct answer (s), and the delay between."""
        out = []
        for label in self.truth:
            row = {"query": label, "seen_s": sightings.get(label)}
            got = self.answered.get(label)
            if got is not None:
                row.update(answered_s=got["t_s"], score=got["score"], to_box_m=got["to_box_m"])
                if row["seen_s"] is not None:
                    row["delay_s"] = round(got["t_s"] - row["seen_s"], 2)
            out.append(row)
        return out


class Announcements:
    """Names of the memories the trainer announces on /trainer/memory, with arrival times."""

    def __init__(self, client, topic: str = "/trainer/memory") -> None:
        from m3_ros.msg import MemoryArchive

        self.items: list[tuple[float, str]] = []  # (time.monotonic(), name); no archives kept
        client.node.create_subscription(
            MemoryArchive, topic, lambda m: self.items.append((time.monotonic(), m.name)), 10
        )

    def quiet_for(self) -> float:
        """Seconds since the last announcement (inf before the first)."""
        return time.monotonic() - self.items[-1][0] if self.items else float("inf")


def live_caught_up(recording: Path, live_dir: Path, keyframes: int) -> bool:
    """Has the trainer folded every training keyframe of the streamed ``recording`` (all
    ``keyframes`` received) into the live snapshot in ``live_dir``?"""
    import json

    from m3_core.data import load_dataset
    from m3_core.errors import M3Error

    try:
        folded = json.loads((live_dir / "memory.json").read_text())["extra"]["live"]["keyframes"]
        dataset = load_dataset(recording)
    except (OSError, ValueError, KeyError, TypeError, M3Error):
        return False
    return len(dataset.frames) >= keyframes and folded >= len(dataset.train_indices)


def wait_live(news: Announcements, walk_end: float, stack, caught_up, quiet_s: float = 30.0,
              cap_s: float = 600.0) -> None:  # fmt: skip
    """Until the trainer has folded every keyframe (``caught_up()``), or announced no live
    snapshot for ``quiet_s`` after the walk (a keyframe it could not fold), at most ``cap_s``.
    The poller keeps asking meanwhile, so answers that come after the walk are timed too."""

    def settled() -> bool:
        quiet = time.monotonic() - walk_end > quiet_s and news.quiet_for() > quiet_s
        return quiet or caught_up()

    try:
        wait_until(settled, cap_s, stack, "the live memory", poll=0.5)
    except SystemExit:
        if stack.dead():
            raise  # a node died: not a slow live memory
