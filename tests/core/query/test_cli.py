"""``m3 ground`` and ``m3 query`` on a saved hand-built memory."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from m3_core.cli.main import main

from .conftest import CHAIR_CENTER, front_camera, pixel_of

# front_camera() as CLI arguments: at the origin looking along +x (see conftest)
POSE = "0 0 0 -0.5 0.5 -0.5 0.5"
INTRINSICS = "50 50 32 24 64 48"


def test_ground_json(memory_dir, capsys):
    assert main(["ground", str(memory_dir), "chair", "--json", "--device", "cpu"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["query"] == "chair" and doc["frame"] == "world"
    (obj,) = doc["objects"]
    assert set(obj) >= {"label", "score", "position", "bbox_min", "bbox_max", "num_gaussians"}
    np.testing.assert_allclose(obj["position"], CHAIR_CENTER, atol=0.03)
    assert obj["num_gaussians"] == 200 and 0.95 < obj["score"] <= 1.0


def test_ground_json_empty_for_absent_object(memory_dir, capsys):
    assert main(["ground", str(memory_dir), "lamp", "--json", "--max-results", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["objects"] == []


def test_ground_text_output_and_user_errors(memory_dir, capsys):
    assert main(["ground", str(memory_dir), "table", "--min-score", "0.5"]) == 0
    assert "1 object(s) for 'table'" in capsys.readouterr().out
    assert main(["ground", str(memory_dir), "chair", "--feature", "clip"]) == 2
    assert "unknown feature 'clip'" in capsys.readouterr().err
    assert main(["ground", str(memory_dir), "chair", "--min-score", "3"]) == 2
    assert main(["ground", str(memory_dir / "nope"), "chair"]) == 2


def test_query_writes_heatmap(memory_dir, tmp_path, capsys):
    out = tmp_path / "rel.png"
    args = ["query", str(memory_dir), "chair", "--pose", POSE, "--intrinsics", INTRINSICS]
    assert main([*args, "--out", str(out)]) == 0
    img = cv2.imread(str(out))
    assert img.shape == (48, 64, 3)
    r, c = pixel_of(CHAIR_CENTER, front_camera())
    b, _, red = (int(v) for v in img[r, c])
    assert red > 100 and b < 100  # turbo: high relevancy is red
    npy = tmp_path / "rel.npy"
    assert main([*args, "--out", str(npy)]) == 0
    rel = np.load(npy)
    assert rel.shape == (48, 64) and rel[r, c] > 0.9
    assert main([*args, "--out", str(tmp_path / "rel.jpg")]) == 2


@pytest.mark.parametrize("pose", ["0 0 0 1", "0 0 0 0 0 0 2"])
def test_query_bad_pose_is_refused(memory_dir, tmp_path, pose):
    out = tmp_path / "rel.png"
    argv = ["query", str(memory_dir), "chair", "--pose", pose, "--intrinsics", INTRINSICS]
    assert main([*argv, "--out", str(out)]) == 2
    assert not out.exists()
