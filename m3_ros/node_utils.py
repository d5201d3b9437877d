"""Shared plumbing for the m3_ros nodes: a safe main(), and service handlers that never die."""

from __future__ import annotations

import functools
import inspect
import sys
import traceback
from collections.abc import Callable, Iterable

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
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

    # functools.wraps keeps the callback's signature visible, so rclpy still passes the
    # MessageInfo to a callback that takes (msg, info)
    if inspect.iscoroutinefunction(callback):

        @functools.wraps(callback)
        async def guarded_async(*args):
            try:
                return await callback(*args)
            except Exception as exc:
                report(exc)

        return guarded_async

    @functools.wraps(callback)
    def guarded(*args):
        try:
            return callback(*args)
        except Exception as exc:
            report(exc)

    return guarded


def run_node(
    factory: Callable[[], rclpy.node.Node], args: list[str] | None = None, num_threads: int = 4
) -> int:
    """rclpy.init, build the node, spin it on a MultiThreadedExecutor until Ctrl-C/SIGTERM."""
    rclpy.init(args=args if args is not None else sys.argv)
    node = None
    try:
        node = factory()
        threads = getattr(node, "executor_threads", num_threads)  # a node may ask for more
        executor = MultiThreadedExecutor(num_threads=threads)
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


def declare_params(node, params: dict, read_only: Iterable[str] = ()) -> None:
    """Declare ``params`` (name -> default); names in ``read_only`` can be set at start-up (YAML,
    launch) but no peer can change them later with set_parameters (limits, trusted roots)."""
    fixed = set(read_only)
    unknown = fixed - set(params)
    if unknown:
        raise ValueError(f"read-only parameters not declared: {sorted(unknown)}")
    for name, default in params.items():
        node.declare_parameter(name, default, ParameterDescriptor(read_only=name in fixed))


def latched_qos(history: int) -> QoSProfile:
    """Reliable + transient-local QoS: a subscriber that starts (or reconnects) late still
    receives the last ``history`` messages (keyframes for a trainer, memories for a server)."""
    return QoSProfile(
        depth=history,
        history=QoSHistoryPolicy.KEEP_LAST,
        reliability=QoSReliabilityPolicy.RELIABLE,
        durability=QoSDurabilityPolicy.TRANSIENT_LOCAL,
    )


CLIENT_DEPTH = 256  # replies a service client can hold before it takes them (see below)


def service_qos(depth: int) -> QoSProfile:
    """Services' default QoS (reliable, volatile) with ``depth`` queued requests and replies.
    The default depth of 10 is shared by all clients of a service: under load, an 11th
    unanswered request or unacknowledged reply pushes out the oldest, and its client never
    hears back. Clients too: Fast DDS delivers every reply of a service to every client's
    reader, which keeps only its own after the queue, so a client starved of CPU loses its
    reply behind other clients' (bench_serving.py, 8 clients + 2 renderers x 60 s under
    load: 36 of 8,471 replies lost at depth 10, 1 at 64; use CLIENT_DEPTH)."""
    return QoSProfile(
        depth=depth,
        history=QoSHistoryPolicy.KEEP_LAST,
        reliability=QoSReliabilityPolicy.RELIABLE,
        durability=QoSDurabilityPolicy.VOLATILE,
    )
