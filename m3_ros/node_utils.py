"""Shared plumbing for the m3_ros nodes: a safe main(), and service handlers that never die."""

from __future__ import annotations

import functools
import inspect
import sys
import traceback
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.qos import QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy

from m3_core.errors import M3Error


def guarded_service(handler: Callable) -> Callable:
    """Wrap a service callback: user errors -> success=false + message; bugs -> logged, the
    node keeps serving. The wrapped handler returns the response it filled."""

    @functools.wraps(handler)
    def wrapper(self, request, response):
        try:
            return handler(self, request, response)
        except M3Error as exc:
            response.success, response.message = False, str(exc)
        except Exception as exc:  # a bug must not take the node down
            self.get_logger().error(f"{handler.__name__} failed:\n{traceback.format_exc()}")
            response.success, response.message = False, f"internal error: {exc}"
        return response

    return wrapper


def guarded_callback(node, callback: Callable) -> Callable:
    """Wrap a subscription callback (plain or async) so that no message can kill the node:
    user errors are logged as warnings, bugs with their traceback; the node keeps running."""

    def report(exc: Exception) -> None:
        if isinstance(exc, M3Error):
            node.get_logger().warning(f"skipped a message: {exc}")
        else:
            node.get_logger().error(f"{callback.__name__} failed:\n{traceback.format_exc()}")

    if inspect.iscoroutinefunction(callback):

        async def guarded_async(msg):
            try:
                return await callback(msg)
            except Exception as exc:
                report(exc)

        return guarded_async

    def guarded(msg):
        try:
            return callback(msg)
        except Exception as exc:
            report(exc)

    return guarded


def run_node(factory: Callable[[], rclpy.node.Node], args: list[str] | None = None) -> int:
    """rclpy.init, build the node, spin it on a MultiThreadedExecutor until Ctrl-C/SIGTERM."""
    rclpy.init(args=args if args is not None else sys.argv)
    node = None
    try:
        node = factory()
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except M3Error as exc:  # bad parameters: one readable line, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


def latched_qos(history: int) -> QoSProfile:
    """Reliable + transient-local QoS: a subscriber that starts (or reconnects) late still
    receives the last ``history`` messages (keyframes for a trainer, memories for a server)."""
    return QoSProfile(
        depth=history,
        history=QoSHistoryPolicy.KEEP_LAST,
        reliability=QoSReliabilityPolicy.RELIABLE,
        durability=QoSDurabilityPolicy.TRANSIENT_LOCAL,
    )
