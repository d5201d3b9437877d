"""`m3 train / eval / render` through the real CLI entry point."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from m3_core.cli.main import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "m3_core.cli.main", *args], capture_output=True, text=True
    )


def test_train_eval_render(tiny_scene, tmp_path, capsys):
    mem = tmp_path / "mem"
    code = main(
        [
            "train",
            str(tiny_scene.root),
            "--out",
            str(mem),
            "--features",
            "labels:8",
            "--preset",
            "small",
            "--iterations",
            "30",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 30 and not summary["cancelled"] and summary["test_psnr"] > 5
    assert main(["eval", str(mem), str(tiny_scene.root), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["frames"] == len(tiny_scene.test_indices)
    assert set(metrics["features"]["labels"]) == {"cos_dist", "mse"}
    out = tmp_path / "view.npz"
    args = ["render", str(mem), "--frame", "1", "--data", str(tiny_scene.root)]
    assert main([*args, "--features", "labels", "--out", str(out)]) == 0
    with np.load(out) as z:
        h, w = tiny_scene.frames[1].camera.height, tiny_scene.frames[1].camera.width
        assert z["rgb"].shape == (h, w, 3) and z["depth"].shape == (h, w)
        assert z["labels"].shape == (h, w, 16)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "/no/such/data", "--out", "/tmp/x"], "/no/such/data"),
        (["eval", "/no/such/mem", "/no/such/data"], "/no/such/mem"),
        (["render", "/no/mem", "--pose", "0 0 0 0 0 0 1", "--out", "/tmp/x.npz"], "--intrinsics"),
        (
            [
                "render",
                "/no/mem",
                "--pose",
                "0 0 nan 0 0 0 1",
                "--intrinsics",
                "50 50 40 30 80 60",
                "--out",
                "/tmp/x.npz",
            ],
            "NaN",
        ),
        (["train", "/tmp", "--out", "/tmp/x", "--features", "a:b"], "bad feature spec"),
    ],
)
def test_cli_errors_are_one_readable_line(args, needle):
    res = run_cli(*args)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert needle in lines[0]
