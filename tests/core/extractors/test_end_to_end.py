"""Issue 5's end-to-end path, offline: weights from a local folder -> `m3 extract` for two
models -> `m3 train --features clip,dinov2` -> `m3 ground` with CLIP's text tower."""

from __future__ import annotations

import json

from m3_core.cli.main import main
from m3_core.data import FeatureStore, make_synthetic_scene


def test_extract_train_ground_with_local_weights(open_clip_dir, dinov2_dir, tmp_path, capsys):
    data = tmp_path / "scene"
    make_synthetic_scene(data, num_frames=9, width=64, height=48)
    for model, weights in (("clip", open_clip_dir), ("dinov2", dinov2_dir)):
        args = ["extract", str(data), "--model", model, "--weights", str(weights)]
        assert main([*args, "--short-side", "32"]) == 0
        store = FeatureStore(data, model)
        assert len(store.stems()) == 9 and store.meta()["model"] == model
    mem = tmp_path / "mem"
    code = main(
        [
            "train",
            str(data),
            "--out",
            str(mem),
            "--features",
            "clip:8,dinov2:8",
            "--preset",
            "small",
            "--iterations",
            "20",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    capsys.readouterr()
    assert main(["info", str(mem), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in info["models"]] == ["clip", "dinov2"]
    # the text tower is found from the memory alone: meta.json names the weights used
    code = main(["ground", str(mem), "a red chair", "--feature", "clip", "--json"])
    assert code == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["query"] == "a red chair" and answer["frame"] == "world"
    assert isinstance(answer["objects"], list)
    for obj in answer["objects"]:
        assert 0.0 <= obj["score"] <= 1.0 and len(obj["position"]) == 3
