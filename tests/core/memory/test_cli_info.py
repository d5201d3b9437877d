"""``m3 info``: human table, JSON, and a clean error for a missing memory."""

from __future__ import annotations

import json

from m3_core.cli.main import main


def test_info_table(memory, tmp_path, capsys):
    memory.save(tmp_path / "mem", extra={"step": 300})
    assert main(["info", str(tmp_path / "mem")]) == 0
    out = capsys.readouterr().out
    assert "gaussians   40" in out and "query dim 10" in out
    lines = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln.strip()}
    assert lines["clip"][:6] == ["clip", "12", "4", "[0:4)", "0.80", "5"]
    assert lines["dino"][:6] == ["dino", "8", "6", "[4:10)", "0.75", "6"]
    assert '"step": 300' in out


def test_info_json_equals_library_summary(memory, tmp_path, capsys):
    from m3_core.memory import Memory

    memory.save(tmp_path)
    assert main(["info", str(tmp_path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == Memory.load(tmp_path).info()
    assert printed["bytes_on_disk"] > 0


def test_info_missing_path(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(["info", str(missing)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("m3 info: error:") and str(missing) in err[0]
