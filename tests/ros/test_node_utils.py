"""No message and no request can kill a node: the guards turn errors into logs / replies."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

pytest.importorskip("rclpy")
from m3_core.errors import InvalidInputError  # noqa: E402
from m3_ros.node_utils import guarded_callback, guarded_service  # noqa: E402


class FakeNode:
    def __init__(self) -> None:
        self.logged: list[tuple[str, str]] = []
        log = SimpleNamespace(
            warning=lambda m: self.logged.append(("warning", m)),
            error=lambda m: self.logged.append(("error", m)),
        )
        self.get_logger = lambda: log


def test_guarded_callback_logs_user_errors_and_bugs_and_passes_results():
    node = FakeNode()

    def on_msg(msg):
        if msg == "bad":
            raise InvalidInputError("image is 0x0")
        if msg == "bug":
            raise ZeroDivisionError("oops")
        return msg.upper()

    cb = guarded_callback(node, on_msg)
    assert cb("ok") == "OK"
    assert cb("bad") is None and cb("bug") is None
    assert node.logged[0] == ("warning", "skipped a message: image is 0x0")
    level, text = node.logged[1]
    assert level == "error" and "on_msg failed" in text and "ZeroDivisionError: oops" in text


def test_guarded_callback_wraps_coroutines():
    node = FakeNode()

    async def on_command(msg):
        raise InvalidInputError(f"empty text {msg!r}")

    cb = guarded_callback(node, on_command)
    assert asyncio.iscoroutinefunction(cb)
    assert asyncio.run(cb("")) is None
    assert node.logged == [("warning", "skipped a message: empty text ''")]


def test_guarded_service_answers_false_with_the_message():
    node = FakeNode()

    class Server:
        def get_logger(self):
            return node.get_logger()

        @guarded_service
        def on_req(self, req, res):
            if req == "bug":
                raise KeyError("k")
            raise InvalidInputError("text is empty")

    res = Server().on_req("bad", SimpleNamespace(success=True, message=""))
    assert (res.success, res.message) == (False, "text is empty")
    res = Server().on_req("bug", SimpleNamespace(success=True, message=""))
    assert not res.success and res.message == "internal error: 'k'"
    assert node.logged[0][0] == "error" and "KeyError" in node.logged[0][1]


def test_services_queue_requests_and_replies_for_all_clients(ros_context):
    """64 queued per service (the default of 10 is shared by every client), fewer where
    given (large replies); freeing destroys them."""
    import rclpy
    from std_srvs.srv import Trigger

    from m3_ros.lifecycle_utils import SERVICE_DEPTH, Interfaces

    node = rclpy.create_node("qos_check", context=ros_context)
    try:
        handler = lambda req, res: res  # noqa: E731
        iface = Interfaces(
            node, [(Trigger, "a", handler, None), (Trigger, "b", handler, None, 8)], {}
        )
        assert [s.qos_profile.depth for s in iface.services] == [SERVICE_DEPTH, 8]
        assert SERVICE_DEPTH >= 32
        iface.free()
        assert not [s for s in node.services if s.srv_name in ("/a", "/b")]
    finally:
        node.destroy_node()
