"""``m3 export MEM --ply OUT.ply``: a standard 3DGS PLY whose values are the memory's.

The memory is built by hand (two feature models, SH degree 2, random values everywhere, so a
swapped or transposed column shows) and saved; the PLY is parsed with ``plyfile`` itself.
Every comparison is exact (atol = rtol = 0): the memory stores float32 and the PLY holds the
same float32 raw parameters (opacity as a logit, scales as logs, rotations wxyz as stored).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from plyfile import PlyData
from torch.testing import assert_close

from m3_core.cli.main import main
from m3_core.config import MemoryConfig
from m3_core.memory import Memory
from m3_core.splat import load_ply
from m3_core.types import ModelSpec

N, SH_DEGREE = 50, 2
K_REST = (SH_DEGREE + 1) ** 2 - 1  # 8 higher SH coefficients per colour channel
SPECS = [ModelSpec("clip", 12, 4, 0.8), ModelSpec("labels", 16, 3, 0.9)]
STANDARD = (
    ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    + [f"f_rest_{i}" for i in range(3 * K_REST)]
    + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
)


@pytest.fixture(scope="module")
def mem_dir(tmp_path_factory) -> Path:
    g = torch.Generator().manual_seed(3)
    q = sum(s.query_channels for s in SPECS)
    gaussians = {
        "means": torch.randn(N, 3, generator=g) * 2,  # [N, 3]
        "scales": torch.randn(N, 3, generator=g) - 3,  # [N, 3] log
        "quats": torch.randn(N, 4, generator=g),  # [N, 4] wxyz
        "opacities": torch.randn(N, generator=g),  # [N] logit
        "sh0": torch.randn(N, 1, 3, generator=g),  # [N, 1, 3]
        "shN": torch.randn(N, K_REST, 3, generator=g),  # [N, K-1, 3]
        "queries": torch.randn(N, q, generator=g),  # [N, Q]
    }
    banks = {s.name: torch.randn(4, s.dim, generator=g) for s in SPECS}
    memory = Memory.create(MemoryConfig(models=SPECS, sh_degree=SH_DEGREE), gaussians, banks)
    out = tmp_path_factory.mktemp("export") / "mem"
    memory.save(out, extra={"world_frame": "odom"})
    return out


def export(capsys, mem: Path, out: Path, *more: str) -> dict:
    code = main(["export", str(mem), "--ply", str(out), *more])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    return json.loads(stdout)


def column(vertex, names: list[str]) -> torch.Tensor:  # [N, len(names)]
    return torch.from_numpy(np.stack([np.asarray(vertex[n]) for n in names], axis=1))


def test_standard_3dgs_properties_hold_the_memory_values(mem_dir, tmp_path, capsys):
    out = tmp_path / "scene.ply"
    summary = export(capsys, mem_dir, out)
    assert summary == {
        "ply": str(out), "num_gaussians": N, "query_channels": 0, "bytes": out.stat().st_size,
    }  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.ply"]  # no temp file left
    ply = PlyData.read(str(out))
    v = ply["vertex"]
    assert [p.name for p in v.properties] == STANDARD  # no f_query_* without --with-queries
    assert all(p.val_dtype == "f4" for p in v.properties)
    g = Memory.load(mem_dir).gaussians
    exact = {"rtol": 0.0, "atol": 0.0}
    assert_close(column(v, ["x", "y", "z"]), g["means"].detach(), **exact)
    assert_close(column(v, ["nx", "ny", "nz"]), torch.zeros(N, 3), **exact)
    assert_close(column(v, ["opacity"])[:, 0], g["opacities"].detach(), **exact)  # logit
    assert_close(column(v, ["scale_0", "scale_1", "scale_2"]), g["scales"].detach(), **exact)
    assert_close(column(v, [f"rot_{i}" for i in range(4)]), g["quats"].detach(), **exact)
    assert_close(column(v, ["f_dc_0", "f_dc_1", "f_dc_2"]), g["sh0"][:, 0].detach(), **exact)
    # f_rest is channel-major: f_rest_{c * K_REST + k} = shN[:, k, c]
    rest = column(v, [f"f_rest_{i}" for i in range(3 * K_REST)]).reshape(N, 3, K_REST)
    assert_close(rest.permute(0, 2, 1), g["shN"].detach(), **exact)
    comments = " | ".join(ply.comments)
    assert "z up" in comments and "REP 103" in comments and "frame_id odom" in comments


def test_with_queries_adds_them_and_round_trips(mem_dir, tmp_path, capsys):
    out = tmp_path / "deep" / "scene.ply"  # missing folders are created
    assert export(capsys, mem_dir, out, "--with-queries")["query_channels"] == 7
    ply = PlyData.read(str(out))
    names = [p.name for p in ply["vertex"].properties]
    assert names == STANDARD + [f"f_query_{i}" for i in range(7)]
    assert "f_query_0..f_query_3: principal queries of clip" in ply.comments
    assert "f_query_4..f_query_6: principal queries of labels" in ply.comments
    back, g = load_ply(out), Memory.load(mem_dir).gaussians
    assert set(back) == set(g)
    for key in g:
        assert_close(back[key].detach(), g[key].detach(), rtol=0.0, atol=0.0, msg=key)


def test_export_replaces_an_existing_file(mem_dir, tmp_path, capsys):
    out = tmp_path / "scene.ply"
    out.write_text("old")
    export(capsys, mem_dir, out)
    assert len(PlyData.read(str(out))["vertex"]) == N


def test_help_names_the_world_frame(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "z up" in text and "REP 103" in text and "--with-queries" in text


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def fails_cleanly(capsys, root: Path, argv: list[str], needle: str) -> None:
    """Exit 2, one stderr line naming the problem, nothing created or removed under root."""
    before = tree(root)
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2 and out == "", err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("m3 export: error: ") and needle in err, err
    assert tree(root) == before


def test_bad_input_exits_2_with_one_line(mem_dir, tmp_path, capsys):
    ply = str(tmp_path / "x.ply")
    fails_cleanly(capsys, tmp_path, ["export", str(tmp_path / "nope"), "--ply", ply], "nope")
    (tmp_path / "folder.ply").mkdir()
    folder = ["export", str(mem_dir), "--ply", str(tmp_path / "folder.ply")]
    fails_cleanly(capsys, tmp_path, folder, "is a folder")
    (tmp_path / "file").write_text("")
    below_file = ["export", str(mem_dir), "--ply", str(tmp_path / "file" / "x.ply")]
    fails_cleanly(capsys, tmp_path, below_file, "is not a folder")


def test_corrupt_memory_exits_2(mem_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(mem_dir, broken)
    tensors = broken / "memory.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:100])  # truncated
    argv = ["export", str(broken), "--ply", str(tmp_path / "x.ply")]
    fails_cleanly(capsys, tmp_path, argv, "memory.safetensors")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_folder_exits_2(mem_dir, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        argv = ["export", str(mem_dir), "--ply", str(locked / "x.ply")]
        fails_cleanly(capsys, tmp_path, argv, "not writable")
    finally:
        locked.chmod(0o700)
