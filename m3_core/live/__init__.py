"""A live memory (issue 18.2): Gaussians seeded from each keyframe's depth, 2D features lifted
onto them training-free, PSC banks extended, queries fitted through GMA; snapshots are plain
memories that answer while the robot walks. See :mod:`m3_core.live.memory`; which of a live
snapshot and a trained memory to serve: :mod:`m3_core.live.choose`."""

from m3_core.live.choose import Decision, Score, choose, held_out_frames, score_memory
from m3_core.live.keyframe import Keyframe, keyframe_from_dataset
from m3_core.live.memory import LiveConfig, LiveMemory

__all__ = [
    "Decision",
    "Keyframe",
    "LiveConfig",
    "LiveMemory",
    "Score",
    "choose",
    "held_out_frames",
    "keyframe_from_dataset",
    "score_memory",
]
