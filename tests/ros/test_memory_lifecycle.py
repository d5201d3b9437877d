"""The memory server's lifecycle contract (Nav2 map_server pattern) and its request limits,
over loopback DDS against the node in its own process."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.ros.conftest import wait_for

pytest.importorskip("rclpy")
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402

from m3_ros import convert  # noqa: E402
from m3_ros.srv import GroundObject, LoadMemory, RenderFeatureAt  # noqa: E402
from tests.ros.test_memory_server import render_request  # noqa: E402

GROUND = "/memory_server/ground_object"
RENDER = "/memory_server/render_feature_at"


def state(client) -> str:
    return client.call(
        GetState, "/memory_server/get_state", GetState.Request()
    ).current_state.label


def change(client, transition: int) -> bool:
    req = ChangeState.Request()
    req.transition.id = transition
    return client.call(ChangeState, "/memory_server/change_state", req).success


def offered(client, name: str) -> bool:
    """Whether the memory server node offers service ``name`` (servers only: the graph's
    plain service list also names services that some client merely calls)."""
    try:
        found = client.node.get_service_names_and_types_by_node("memory_server", "/")
    except Exception:  # the node is not (yet) discovered
        return False
    return any(n == name for n, _ in found)


def ground(client):
    return client.call(GroundObject, GROUND, GroundObject.Request(text="chair"), timeout=30)


def test_transitions_create_check_and_free_the_services(trained_memory, spawn, client):
    memory, _ = trained_memory
    server = spawn("memory_server", {"memory_path": str(memory), "autostart": False})
    wait_for(lambda: offered(client, "/memory_server/get_state"), 60, "the node", server)
    assert state(client) == "unconfigured"
    assert not offered(client, GROUND)  # nothing answers before configure

    assert change(client, Transition.TRANSITION_CONFIGURE) and state(client) == "inactive"
    res = ground(client)
    assert not res.success and "inactive, not active" in res.message
    assert change(client, Transition.TRANSITION_ACTIVATE) and state(client) == "active"
    res = ground(client)
    assert res.success and res.objects, res.message
    assert change(client, Transition.TRANSITION_DEACTIVATE) and state(client) == "inactive"
    res = client.call(LoadMemory, "/memory_server/load_memory", LoadMemory.Request(path="x"))
    assert not res.success and "inactive" in res.message
    assert change(client, Transition.TRANSITION_CLEANUP) and state(client) == "unconfigured"
    wait_for(lambda: not offered(client, GROUND), 30, "cleanup to remove the services", server)
    assert change(client, Transition.TRANSITION_CONFIGURE)
    assert change(client, Transition.TRANSITION_ACTIVATE)
    assert ground(client).success
    assert change(client, Transition.TRANSITION_ACTIVE_SHUTDOWN)
    assert state(client) == "finalized"
    wait_for(lambda: not offered(client, GROUND), 30, "shutdown to remove the services", server)
    assert server.alive()


def test_a_failed_configure_leaves_nothing_answering(spawn, client, tmp_path):
    server = spawn("memory_server", {"memory_path": str(tmp_path / "missing")})
    wait_for(lambda: offered(client, "/memory_server/get_state"), 60, "the node", server)
    wait_for(lambda: "configure failed" in server.output(), 60, "the failure", server)
    assert state(client) == "unconfigured"
    for name in (GROUND, "/memory_server/load_memory", RENDER):
        assert not offered(client, name), name
    # a trusted-folder parameter that makes configure fail is refused the same way
    assert server.alive()


def test_limits_are_read_only_and_renders_are_bounded(trained_memory, spawn, client):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    from m3_core.memory import Memory

    memory, _ = trained_memory
    mem = Memory.load(memory)
    d = mem.config.models[0].dim
    cap = 64 * 48 * (3 + 4 + 4 * d)  # bytes of a full 64x48 answer: rgb8, 32FC1, d floats
    limits = {"memory_path": str(memory), "max_render_pixels": 200 * 200}
    server = spawn("memory_server", {**limits, "max_render_bytes": cap})
    wait_for(lambda: ground(client).success, 90, "the server", server)

    value = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=10**9)
    for name in ("max_render_pixels", "max_render_bytes", "max_results", "max_pending_renders"):
        req = SetParameters.Request(parameters=[Parameter(name=name, value=value)])
        res = client.call(SetParameters, "/memory_server/set_parameters", req)
        assert not res.results[0].successful and "read-only" in res.results[0].reason, name

    req = render_request(64, 48)
    req.features = ["labels"] * 3
    res = client.call(RenderFeatureAt, RENDER, req)
    assert not res.success and "repeat" in res.message
    req.features = ["labels", "clip"]
    res = client.call(RenderFeatureAt, RENDER, req)
    assert not res.success and "'clip'" in res.message and "labels" in res.message
    # 160x120 is within max_render_pixels, but not within the byte cap
    big = render_request(160, 120)
    res = client.call(RenderFeatureAt, RENDER, big)
    assert not res.success and "max_render_bytes" in res.message, res.message

    full = client.call(RenderFeatureAt, RENDER, render_request(64, 48))
    assert full.success, full.message
    assert full.rgb.header.frame_id == full.depth.header.frame_id == "map"
    dense = convert.feature_map_from_msg(full.feature_maps[0])  # [48, 64, d]
    big.feature_stride = 4  # 40 x 30 maps: fits (160 * 120 * 7 + 1200 * 4 * d <= cap)
    res = client.call(RenderFeatureAt, RENDER, big)
    assert res.success, res.message
    assert convert.feature_map_from_msg(res.feature_maps[0]).shape == (30, 40, dense.shape[2])
    req = render_request(64, 48)
    req.feature_mode = RenderFeatureAt.Request.FEATURES_QUERIES
    res = client.call(RenderFeatureAt, RENDER, req)
    assert res.success, res.message
    queries = convert.feature_map_from_msg(res.feature_maps[0])
    assert queries.shape[:2] == (48, 64) and queries.shape[2] < dense.shape[2]
    # the query channels decode (with the memory's GMA) to the decoded maps
    with torch.no_grad():
        decoded = mem.decode("labels", torch.from_numpy(queries.copy())).numpy()
    np.testing.assert_allclose(decoded, dense, rtol=1e-4, atol=1e-5)
    assert server.alive()


def test_renders_past_max_pending_are_refused_at_once(trained_memory, spawn, client):
    """One render in flight at most: renders sent while it runs are answered 'busy' at once
    (not queued behind it), every request gets an answer, and GroundObject is unaffected."""
    import time

    from m3_ros.node_utils import CLIENT_DEPTH, service_qos

    memory, _ = trained_memory
    server = spawn("memory_server", {"memory_path": str(memory), "max_pending_renders": 1})
    wait_for(lambda: ground(client).success, 90, "the server", server)
    render = client.node.create_client(RenderFeatureAt, RENDER, qos_profile=service_qos(8))
    grounder = client.node.create_client(
        GroundObject, GROUND, qos_profile=service_qos(CLIENT_DEPTH)
    )
    assert render.wait_for_service(timeout_sec=30)
    slow = render_request(1024, 768)  # hundreds of milliseconds or more on one kernel thread
    futures = [render.call_async(slow) for _ in range(4)]  # sent within a few milliseconds
    ground_future = grounder.call_async(GroundObject.Request(text="chair"))
    deadline = time.monotonic() + 120
    while not all(f.done() for f in [*futures, ground_future]) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert all(f.done() for f in futures), "a render request got no answer"
    results = [f.result() for f in futures]
    served = [r for r in results if r.success]
    busy = [r for r in results if not r.success]
    assert served, [r.message for r in results]  # the first to arrive is rendered
    assert busy and all("busy: 1 renders in flight" in r.message for r in busy), [
        r.message for r in results
    ]
    assert ground_future.result().success
    assert client.call(RenderFeatureAt, RENDER, render_request(64, 48)).success
    assert server.alive()
