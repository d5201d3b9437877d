"""The nav bridge's Nav2 side: a ``NavigateToPose`` client that reports what became of a goal.

Used when ``nav2_msgs`` is importable (a ROS 2 install with Nav2) and the action server is up;
otherwise the bridge publishes a ``PoseStamped`` instead. A newer goal supersedes the previous
one (Nav2 preempts it); outcomes go to ``report`` (the bridge's ``~/status``), and so does
each change in the server's availability (checked every second), so an operator sees which
way the next goal will go.
"""

from __future__ import annotations

from collections.abc import Callable

from action_msgs.msg import GoalStatus


class Nav2Goals:
    def __init__(self, node, action_name: str, group, report: Callable[[str], None]) -> None:
        self.report, self.client, self.action_name = report, None, action_name
        self.was_ready = False
        try:
            from nav2_msgs.action import NavigateToPose
            from rclpy.action import ActionClient
        except ImportError:
            return
        self.goal_type = NavigateToPose.Goal
        self.client = ActionClient(node, NavigateToPose, action_name, callback_group=group)
        node.create_timer(1.0, self._watch, callback_group=group)

    def _watch(self) -> None:
        now = self.ready()
        if now != self.was_ready:
            self.was_ready = now
            state = "available" if now else "gone; goals go to the goal topic"
            self.report(f"Nav2 {self.action_name} is {state}")

    def ready(self) -> bool:
        return self.client is not None and self.client.server_is_ready()

    def send(self, pose, label: str) -> None:
        """Send ``pose`` (PoseStamped) as a NavigateToPose goal; report its outcome."""
        future = self.client.send_goal_async(self.goal_type(pose=pose))
        future.add_done_callback(lambda f: self._accepted(f, label))

    def _accepted(self, future, label: str) -> None:
        handle = future.result()
        if handle is None or not handle.accepted:
            return self.report(f"Nav2 rejected the goal for {label!r}")
        handle.get_result_async().add_done_callback(lambda f: self._done(f, label))

    def _done(self, future, label: str) -> None:
        res = future.result()
        if res.status == GoalStatus.STATUS_SUCCEEDED:
            return self.report(f"Nav2 reached the goal for {label!r}")
        if res.status == GoalStatus.STATUS_CANCELED:
            return self.report(f"Nav2 goal for {label!r} was cancelled or replaced")
        code, why = res.result.error_code, res.result.error_msg
        self.report(f"Nav2 failed the goal for {label!r}: error {code} {why}".rstrip())
