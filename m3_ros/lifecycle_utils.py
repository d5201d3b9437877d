"""Lifecycle-node plumbing in the Nav2 style: resources made in on_configure, freed in
on_cleanup / on_shutdown / on_error, and the current state for callbacks to check."""

from __future__ import annotations

from m3_core.errors import InvalidInputError
from m3_ros.node_utils import latched_qos, service_qos

SERVICE_DEPTH = 64  # requests and replies queued per service (all clients together)


def lifecycle_state(node) -> str:
    """The lifecycle node's current state label: unconfigured, inactive, active, finalized,
    or a transition (configuring, ...). rclpy has no public getter; its own code reads this."""
    return node._state_machine.current_state[1]


def require_active(node) -> None:
    """Raise (-> success=false with the message) unless the node is active."""
    if (state := lifecycle_state(node)) != "active":
        raise InvalidInputError(f"{node.get_name()} is {state}, not active (lifecycle state)")


class Interfaces:
    """The services and latched lifecycle publishers of one configuration of a node.

    ``services``: (type, name, handler, callback group[, queue depth]), the depth
    SERVICE_DEPTH unless given (keep it small where replies are large: the queue holds them
    until acknowledged); ``publishers``: key -> (type, topic).
    Lifecycle publishers publish only while the node is active (rclpy drops and warns
    otherwise). ``free()`` destroys everything, so nothing answers afterwards."""

    def __init__(self, node, services, publishers: dict) -> None:
        self.node = node
        self.services = [
            node.create_service(
                srv, name, handler, callback_group=group, qos_profile=service_qos(depth)
            )
            for srv, name, handler, group, depth in (
                (*s, SERVICE_DEPTH) if len(s) == 4 else s for s in services
            )
        ]
        self.pubs = {
            key: node.create_lifecycle_publisher(msg_type, topic, latched_qos(1))
            for key, (msg_type, topic) in publishers.items()
        }

    def publish(self, key: str, msg) -> None:
        self.pubs[key].publish(msg)

    def free(self) -> None:
        for srv in self.services:
            self.node.destroy_service(srv)
        for pub in self.pubs.values():
            self.node.destroy_lifecycle_publisher(pub)
        self.services, self.pubs = [], {}
