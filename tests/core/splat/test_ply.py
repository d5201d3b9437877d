"""3DGS PLY export/import round trip and layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from plyfile import PlyData
from torch.testing import assert_close

from m3_core.errors import CheckpointError
from m3_core.splat import init_gaussians, load_ply, random_points, save_ply


@pytest.fixture
def params() -> torch.nn.ParameterDict:
    g = torch.Generator().manual_seed(0)
    p = init_gaussians(random_points(30, generator=g), None, query_dim=5, sh_degree=2, generator=g)
    with torch.no_grad():
        p["shN"].normal_(generator=g)  # distinct values so a transposition would show
    return p


def test_roundtrip(params: torch.nn.ParameterDict, tmp_path: Path) -> None:
    path = tmp_path / "sub" / "scene.ply"
    save_ply(params, path)
    assert [f.name for f in path.parent.iterdir()] == ["scene.ply"]  # no temp file left
    back = load_ply(path)
    assert set(back.keys()) == set(params.keys())
    for k in params:
        assert_close(back[k], params[k].detach(), rtol=0, atol=0, msg=k)


def test_standard_layout(params: torch.nn.ParameterDict, tmp_path: Path) -> None:
    path = tmp_path / "scene.ply"
    save_ply(params, path)
    v = PlyData.read(str(path))["vertex"]
    names = [p.name for p in v.properties]
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[9:33] == [f"f_rest_{i}" for i in range(24)]
    assert names[33:41] == ["opacity", "scale_0", "scale_1", "scale_2"] + [
        f"rot_{i}" for i in range(4)
    ]
    assert names[41:] == [f"f_query_{i}" for i in range(5)]
    # f_rest is channel-major: f_rest_{c * 8 + k} = shN[:, k, c]
    assert_close(torch.as_tensor(v["f_rest_9"]), params["shN"][:, 1, 1].detach())


def test_plain_3dgs_file_without_queries(params: torch.nn.ParameterDict, tmp_path: Path) -> None:
    p = {k: v for k, v in params.items() if k != "queries"}
    save_ply(p, tmp_path / "plain.ply")
    back = load_ply(tmp_path / "plain.ply")
    assert back["queries"].shape == (30, 0)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError):
        load_ply(tmp_path / "missing.ply")
    (tmp_path / "junk.ply").write_bytes(b"not a ply")
    with pytest.raises(CheckpointError):
        load_ply(tmp_path / "junk.ply")
