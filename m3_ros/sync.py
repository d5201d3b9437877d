"""Approximate-time pairing of a primary stream (camera images) with secondary streams
(depth, camera info, pose), for when ``message_filters`` is not importable.

For each primary message, every secondary stream contributes its message nearest in time if
it lies within ``slop`` seconds. A primary is decided only once each secondary has a message
at or after its stamp (so a closer one cannot still arrive) or once it is older than
``max_delay`` seconds than the newest primary; queues are bounded (``queue_size``).
"""

from __future__ import annotations

from bisect import insort
from collections import deque
from collections.abc import Callable


class NearestTimeSync:
    def __init__(
        self,
        secondaries: list[str],
        callback: Callable[..., None],
        *,
        slop: float = 0.05,
        queue_size: int = 30,
        max_delay: float = 0.5,
    ) -> None:
        self.names = list(secondaries)
        self.callback = callback
        self.slop, self.max_delay, self.queue_size = slop, max_delay, queue_size
        self.primary: deque[tuple[float, object]] = deque(maxlen=queue_size)
        self.queues: dict[str, list[tuple[float, int, object]]] = {n: [] for n in self.names}
        self._seq = 0
        self.dropped = 0

    def add_primary(self, stamp: float, msg: object) -> None:
        if len(self.primary) == self.queue_size:
            self.dropped += 1  # the oldest undecided image falls out of the bounded queue
        self.primary.append((stamp, msg))
        self._process()

    def add(self, name: str, stamp: float, msg: object) -> None:
        q = self.queues[name]
        self._seq += 1
        insort(q, (stamp, self._seq, msg), key=lambda e: (e[0], e[1]))
        if len(q) > self.queue_size:
            del q[0]
        self._process()

    def _nearest(self, name: str, stamp: float):
        q = self.queues[name]
        if not q:
            return None
        best = min(q, key=lambda e: abs(e[0] - stamp))
        return best if abs(best[0] - stamp) <= self.slop else None

    def _process(self) -> None:
        while self.primary:
            stamp, msg = self.primary[0]
            newest = self.primary[-1][0]
            settled = all(q and q[-1][0] >= stamp for q in self.queues.values())
            if not settled and newest - stamp < self.max_delay:
                return
            self.primary.popleft()
            matches = [self._nearest(n, stamp) for n in self.names]
            if any(m is None for m in matches):
                self.dropped += 1
                continue
            for n, m in zip(self.names, matches):  # drop what is older than the match
                q = self.queues[n]
                while q and q[0][0] < m[0]:
                    q.pop(0)
            self.callback(stamp, msg, *[m[2] for m in matches])
