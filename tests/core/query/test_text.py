"""Text embeddings: vocabulary lookup, the extractor's text tower, clear errors, caching."""

from __future__ import annotations

import pytest
import torch

from m3_core.data.features import FeatureStore
from m3_core.errors import InvalidInputError, M3Error
from m3_core.query.text import TextEncoder

from .conftest import DIM, basis, label_bank


def test_vocabulary_lookup_is_exact_up_to_case_space_and_articles(vocab):
    enc = TextEncoder(vocabularies=vocab)
    bank = label_bank()
    got = enc.embed("labels", ["chair", "  Chair ", "the chair", "a table"])
    torch.testing.assert_close(got, bank[[1, 1, 1, 2]])
    assert enc.is_closed("labels") and enc.can_embed("labels")


def test_vocabulary_rows_are_normalised(tmp_path):
    store = FeatureStore(tmp_path, "labels")
    store.save_vocabulary(["teddy bear", "cup"], torch.tensor([[3.0, 4.0], [0.0, 2.0]]))
    enc = TextEncoder(tmp_path)
    torch.testing.assert_close(
        enc.embed("labels", ["teddy_bear", "cup"]), torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    )


def test_closed_vocabulary_refuses_unknown_text_and_lists_entries(vocab):
    enc = TextEncoder(vocabularies=vocab)
    with pytest.raises(InvalidInputError, match=r"'spaceship'.*'floor', 'chair'"):
        enc.embed("labels", ["spaceship"])


@pytest.mark.parametrize("bad", ["", "   ", None, 3])
def test_empty_or_non_string_text_is_refused(vocab, bad):
    with pytest.raises(InvalidInputError):
        TextEncoder(vocabularies=vocab).embed("labels", [bad])
    with pytest.raises(InvalidInputError):
        TextEncoder(vocabularies=vocab).embed("labels", [])


def test_feature_without_vocabulary_or_tower_is_a_clear_error(tmp_path):
    FeatureStore(tmp_path, "dino").save_meta({"model": "dinov2", "has_text": False, "dim": 8})
    enc = TextEncoder(tmp_path)
    assert not enc.can_embed("dino")
    with pytest.raises(M3Error, match="cannot embed text"):
        enc.embed("dino", ["chair"])


def test_text_tower_from_meta_is_used_and_cached(tmp_path, fake_tower):
    FeatureStore(tmp_path, "labels").save_meta({"model": "testtower", "has_text": True})
    enc = TextEncoder(tmp_path)
    assert enc.tower_name("labels") == "testtower" and not enc.is_closed("labels")  # open
    a = enc.embed("labels", ["chair", "spaceship"])
    torch.testing.assert_close(a, basis()[[1, DIM - 1]])
    b = enc.embed("labels", ["Chair", "spaceship", "table"])
    torch.testing.assert_close(b[:2], a)
    assert fake_tower.calls == ["chair", "spaceship", "table"]  # each text encoded once


def test_vocabulary_first_then_tower(tmp_path, fake_tower, vocab):
    FeatureStore(tmp_path, "labels").save_meta({"model": "testtower", "has_text": True})
    texts, emb = vocab["labels"]
    FeatureStore(tmp_path, "labels").save_vocabulary(texts, emb)
    enc = TextEncoder(tmp_path)
    enc.embed("labels", ["table", "spaceship"])
    assert fake_tower.calls == ["spaceship"]  # "table" came from the vocabulary
    assert enc.is_closed("labels")  # a fixed vocabulary (like effnet's classes) is closed


def test_unknown_feature_has_no_embedding(tmp_path):
    with pytest.raises(M3Error):
        TextEncoder(tmp_path).embed("nothing", ["chair"])
