"""render_memory's serving options: reduced feature resolution, raw query channels, and the
stage hook that lets a caller stop a render (time budgets)."""

from __future__ import annotations

import pytest
import torch

from m3_core.data.synthetic import look_at_c2w
from m3_core.errors import InvalidInputError
from m3_core.memory.render import render_gaussians, render_memory
from m3_core.types import Camera


@pytest.fixture
def camera() -> Camera:
    return Camera(20.0, 20.0, 11.0, 8.5, 22, 17, look_at_c2w([0.0, -4.0, 0.5], 1.2))


def block_mean(q: torch.Tensor, k: int) -> torch.Tensor:  # [H, W, C] -> [ceil(H/k), ceil(W/k), C]
    """Reference: mean over each k x k block, edge blocks over the pixels they hold."""
    h, w = -(-q.shape[0] // k), -(-q.shape[1] // k)
    out = torch.empty(h, w, q.shape[2], dtype=q.dtype)
    for i in range(h):
        for j in range(w):
            out[i, j] = q[i * k : (i + 1) * k, j * k : (j + 1) * k].reshape(-1, q.shape[2]).mean(0)
    return out


@torch.no_grad()
@pytest.mark.parametrize("stride", [1, 3, 4])
def test_strided_features_decode_the_block_mean_of_the_queries(memory, camera, stride):
    ref = render_gaussians(memory.gaussians, camera, sh_degree=memory.config.sh_degree)
    full = render_memory(memory, camera, ["clip", "dino"])
    out = render_memory(memory, camera, ["clip", "dino"], feature_stride=stride)
    raw = render_memory(memory, camera, ["dino"], feature_stride=stride, decode=False)
    torch.testing.assert_close(out["rgb"], full["rgb"])  # images stay at full resolution
    torch.testing.assert_close(out["depth"], full["depth"])
    for name in ("clip", "dino"):
        q = block_mean(ref.queries[..., memory.layout.slice(name)], stride)
        assert out[name].shape == (
            *q.shape[:2],
            memory.config.models[0 if name == "clip" else 1].dim,
        )
        torch.testing.assert_close(out[name], memory.decode(name, q), rtol=1e-5, atol=1e-6)
    dino_q = block_mean(ref.queries[..., memory.layout.slice("dino")], stride)
    torch.testing.assert_close(raw["dino"], dino_q, rtol=1e-5, atol=1e-6)
    if stride == 1:
        torch.testing.assert_close(out["clip"], full["clip"])


def test_the_check_hook_sees_every_stage_and_can_stop_the_render(memory, camera):
    stages: list[str] = []
    render_memory(memory, camera, ["clip", "dino"], check=stages.append)
    assert stages == ["rasterize", "clip", "dino"]

    def stop(stage: str) -> None:
        if stage == "clip":
            raise InvalidInputError("over budget")

    with pytest.raises(InvalidInputError, match="over budget"):
        render_memory(memory, camera, ["clip", "dino"], check=stop)
    with pytest.raises(InvalidInputError, match="feature_stride"):
        render_memory(memory, camera, ["clip"], feature_stride=0)
