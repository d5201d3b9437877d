"""The demo's scripted ROS client: one node in the demo process, spun by a background thread,
that publishes the walk, sends the TrainMemory goal, calls GroundObject and commands the nav
bridge (the same interfaces a robot application uses)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class DemoClient:
    """An rclpy node ``m3_demo`` with a MultiThreadedExecutor on a daemon thread."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import MultiThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("m3_demo", context=self.context)
        self.executor = MultiThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def wait_service(self, srv_type, name: str, timeout: float) -> bool:
        return self.node.create_client(srv_type, name).wait_for_service(timeout_sec=timeout)

    def call(self, srv_type, name: str, request, timeout: float = 60.0):
        """Call a service; None when it is unavailable or does not answer in time."""
        client = self.node.create_client(srv_type, name)
        if not client.wait_for_service(timeout_sec=min(timeout, 10.0)):
            return None
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.005)
        return future.result() if future.done() else None

    def collect(self, msg_type, topic: str, depth: int = 50) -> list:
        """Subscribe; received messages are appended to the returned list."""
        got: list = []
        self.node.create_subscription(msg_type, topic, got.append, depth)
        return got

    def train(
        self,
        action_name: str,
        goal,
        on_feedback: Callable[[object], None],
        timeout: float,
        server_timeout: float = 60.0,
    ):
        """Send a TrainMemory goal and wait for its result (None on timeout / rejection)."""
        from rclpy.action import ActionClient

        from m3_ros.action import TrainMemory

        client = ActionClient(self.node, TrainMemory, action_name)
        if not client.wait_for_server(timeout_sec=server_timeout):
            return None
        sent = client.send_goal_async(goal, feedback_callback=lambda m: on_feedback(m.feedback))
        deadline = time.monotonic() + timeout
        while not sent.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        handle = sent.result() if sent.done() else None
        if handle is None or not handle.accepted:
            return None
        result = handle.get_result_async()
        while not result.done() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not result.done():
            handle.cancel_goal_async()
            return None
        return result.result().result

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        if self.context.ok():
            rclpy.shutdown(context=self.context)
