"""The strict JSON round trip of dataclass configs: unknown keys and wrong types refused."""

from __future__ import annotations

import json

import pytest

from m3_core.config import MemoryConfig, from_dict, save_json, to_dict
from m3_core.errors import InvalidInputError
from m3_core.train import FeatureSpec, TrainConfig
from m3_core.types import ModelSpec


def test_round_trip_through_json(tmp_path):
    cfg = TrainConfig(features=[FeatureSpec("clip", 16, None)], max_image_size=(640, 480))
    save_json(cfg, tmp_path / "c.json")
    back = from_dict(TrainConfig, json.loads((tmp_path / "c.json").read_text()))
    assert back == cfg and back.max_image_size == (640, 480)
    mem = MemoryConfig(models=[ModelSpec("clip", 512, 16, 0.8)], sh_degree=1)
    assert from_dict(MemoryConfig, json.loads(json.dumps(to_dict(mem)))) == mem


def test_int_is_a_float_but_nothing_else_converts():
    assert from_dict(MemoryConfig, {"gma_temperature": 1}).gma_temperature == 1.0
    assert isinstance(from_dict(MemoryConfig, {"gma_temperature": 1}).gma_temperature, float)


@pytest.mark.parametrize(
    "cls, data, needle",
    [
        (MemoryConfig, {"sh_degree": "3"}, "config.sh_degree must be int, got str"),
        (MemoryConfig, {"sh_degree": 3.0}, "sh_degree must be int"),
        (MemoryConfig, {"sh_degree": True}, "sh_degree must be int, got bool"),
        (MemoryConfig, {"gma_temperature": "0.05"}, "gma_temperature must be a number"),
        (MemoryConfig, {"gma_temperature": float("nan")}, "gma_temperature must be a number"),
        (MemoryConfig, {"gma_temperature": float("inf")}, "gma_temperature must be positive"),
        (MemoryConfig, {"train_projection": 1}, "train_projection must be bool"),
        (MemoryConfig, {"models": {"a": 1}}, "config.models must be"),
        (MemoryConfig, {"models": [{"name": 5, "dim": 8}]}, "models[0].name must be str"),
        (MemoryConfig, {"models": [{"name": "a", "dim": "8"}]}, "models[0].dim must be int"),
        (MemoryConfig, {"models": ["clip"]}, "models[0]: expected an object"),
        (TrainConfig, {"max_image_size": [640]}, "max_image_size must have 2 items"),
        (TrainConfig, {"max_image_size": "640x480"}, "max_image_size must be"),
        (TrainConfig, {"psc_max_inputs": "all"}, "psc_max_inputs must be"),
        (TrainConfig, {"optim": {"eps": None}}, "optim.eps must be a number"),
        (TrainConfig, {"colour": "red"}, "unknown keys ['colour']"),
    ],
)
def test_wrong_types_are_refused(cls, data, needle):
    with pytest.raises(InvalidInputError) as exc:
        from_dict(cls, data)
    assert needle in str(exc.value)


def test_optional_accepts_none_and_its_type():
    assert from_dict(TrainConfig, {"psc_max_inputs": None}).psc_max_inputs is None
    assert from_dict(TrainConfig, {"psc_max_inputs": 7}).psc_max_inputs == 7
