"""The collector's training request: a ``TrainMemory`` goal that is not lost to a fault.

The goal is re-sent (up to ``retries`` more times, ``retry_delay_s`` apart) when the trainer
does not answer it within ``goal_timeout_s``, rejects it (busy), or loses it: its action server
disappears (a crash; a respawned trainer resumes from its checkpoint, because the output
folder is one per recording) or no feedback or result arrives for ``progress_timeout_s``.
A goal the trainer aborts (bad data, a training error) is reported, not retried. The state
(``training``: idle, sent, training, retrying, succeeded, failed, cancelled), a message and
the attempt count are read by the collector for ``~/status``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from action_msgs.msg import GoalStatus
from rclpy.action import ActionClient

from m3_ros.action import TrainMemory


@dataclass(frozen=True)
class RequestPolicy:
    goal_timeout_s: float = 10.0  # accept/reject must come within this
    progress_timeout_s: float = 900.0  # feedback or the result must come within this
    retries: int = 3  # re-sends after the first goal
    retry_delay_s: float = 5.0
    check_period_s: float = 1.0


class TrainingRequester:
    """Send a goal for a recording when enough keyframes exist, watch it, re-send it."""

    def __init__(self, node, action_name: str, policy: RequestPolicy | None = None) -> None:
        self.node, self.action_name = node, action_name
        self.policy = policy or RequestPolicy()
        self.client = ActionClient(node, TrainMemory, action_name)
        self.lock = threading.Lock()
        self.goal: TrainMemory.Goal | None = None
        self.state, self.message, self.attempts = "idle", "", 0
        self.handle = None
        self.since = self.retry_at = 0.0
        self.timer = node.create_timer(self.policy.check_period_s, self._check)

    def status(self) -> dict:
        with self.lock:
            return {
                "training": self.state,
                "training_message": self.message,
                "training_attempts": self.attempts,
            }

    def request(self, goal: TrainMemory.Goal, have: int, need: int) -> tuple[bool, str]:
        """(accepted for sending, message) for ``have`` keyframes of the ``need``ed."""
        if have < need:
            return False, f"only {have} keyframes; need {need}"
        with self.lock:
            if self.state in ("sent", "training", "retrying"):
                return False, f"a training request is already {self.state}"
        if not self.client.server_is_ready():
            return False, f"trainer action {self.action_name} is not available"
        with self.lock:
            self.goal, self.attempts = goal, 0
            self._send()
        return True, f"training requested on {have} keyframes of {goal.recording_id}"

    # -- internals (called with self.lock held, except the callbacks) ------------------------
    def _set(self, state: str, message: str) -> None:
        self.state, self.message, self.since = state, message, time.monotonic()
        log = self.node.get_logger()  # one severity per call site (an rclpy rule)
        if state in ("retrying", "failed"):
            log.warning(f"training: {message}")
        else:
            log.info(f"training: {message}")

    def _send(self) -> None:
        self.attempts += 1
        self.handle = None
        attempt = self.attempts
        self._set("sent", f"goal sent (attempt {attempt})")
        future = self.client.send_goal_async(self.goal, feedback_callback=self._on_feedback)
        future.add_done_callback(lambda f: self._on_goal_response(f, attempt))

    def _retry(self, why: str) -> None:
        if self.attempts > self.policy.retries:
            self._set("failed", f"{why}; gave up after {self.attempts} attempts")
            return
        self.retry_at = time.monotonic() + self.policy.retry_delay_s
        self._set("retrying", f"{why}; sending again in {self.policy.retry_delay_s:g} s")

    def _on_goal_response(self, future, attempt: int) -> None:
        handle = future.result()
        with self.lock:
            if attempt != self.attempts or self.state != "sent":
                return  # an answer to a goal already given up on
            if handle is None or not handle.accepted:
                return self._retry("the trainer rejected the goal (busy?)")
            self.handle = handle
            self._set("training", f"the trainer accepted the goal (attempt {attempt})")
        handle.get_result_async().add_done_callback(lambda f: self._on_result(f, attempt))

    def _on_feedback(self, feedback) -> None:
        with self.lock:
            if self.state == "training":
                self.since = time.monotonic()

    def _on_result(self, future, attempt: int) -> None:
        res = future.result()
        with self.lock:
            if attempt != self.attempts or self.state != "training":
                return
            if res.status == GoalStatus.STATUS_SUCCEEDED:
                self._set("succeeded", f"training finished: {res.result.message}")
            elif res.status == GoalStatus.STATUS_CANCELED:
                self._set("cancelled", f"training cancelled: {res.result.message}")
            else:
                self._set("failed", f"training failed: {res.result.message or res.status}")

    def _check(self) -> None:
        now = time.monotonic()
        with self.lock:
            age = now - self.since
            if self.state == "sent" and age > self.policy.goal_timeout_s:
                self._retry(f"no answer to the goal in {self.policy.goal_timeout_s:g} s")
            elif self.state == "training" and not self.client.server_is_ready():
                self._retry("the trainer went away during training (goal lost)")
            elif self.state == "training" and age > self.policy.progress_timeout_s:
                self._retry(f"no progress from the trainer in {age:.0f} s")
            elif self.state == "retrying" and now >= self.retry_at:
                if self.client.server_is_ready():
                    self._send()
                elif now - self.retry_at > self.policy.goal_timeout_s:
                    self._retry(f"trainer action {self.action_name} is not available")
