"""Shared plumbing for the m3_ros nodes: a safe main(), and service handlers that never die."""

from __future__ import annotations

import functools
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
