"""A PSC bank of bounded size: Algorithm 1 at the largest threshold (on the step grid) whose
bank fits, the same rows as build_psc at that threshold (the trainer's use of it:
tests/core/train/test_trainer.py)."""

from __future__ import annotations

import pytest
import torch

from m3_core.errors import InvalidInputError
from m3_core.memory import build_psc, build_psc_capped

from .conftest import clustered


def test_a_bank_that_fits_is_algorithm_1_unchanged():
    x = clustered(600, 16, 5, 0.1, seed=1).float()
    bank, kept, used = build_psc_capped(x, 0.9, 10_000)
    ref_bank, ref_kept = build_psc(x, 0.9)
    assert used == 0.9
    torch.testing.assert_close(kept, ref_kept, rtol=0, atol=0)
    torch.testing.assert_close(bank, ref_bank, rtol=0, atol=0)
    assert torch.equal(build_psc_capped(x, 0.9, None)[1], ref_kept)


def test_noisy_rows_get_the_largest_threshold_that_fits():
    x = clustered(3000, 16, 12, 1.5, seed=2).float()  # noise about the size of the centres
    full = build_psc(x, 0.95)[0].shape[0]
    cap = 200
    assert full > 5 * cap  # noise keeps most rows at the family threshold
    bank, kept, used = build_psc_capped(x, 0.95, cap, step=0.01)
    assert bank.shape[0] <= cap and used < 0.95
    assert round((0.95 - used) / 0.01, 6) == round((0.95 - used) / 0.01)  # on the grid
    ref_bank, ref_kept = build_psc(x, used)  # the same rows as Algorithm 1 at `used`
    assert torch.equal(kept, ref_kept)
    torch.testing.assert_close(bank, x[kept], rtol=0, atol=0)
    assert build_psc(x, round(used + 0.01, 6))[0].shape[0] > cap  # one step up does not fit


def test_subsampled_inputs_index_the_full_features():
    x = clustered(2000, 8, 6, 1.0, seed=3).float()
    g = torch.Generator().manual_seed(5)
    bank, kept, used = build_psc_capped(x, 0.95, 50, max_inputs=700, generator=g)
    assert bank.shape[0] <= 50
    torch.testing.assert_close(bank, x[kept], rtol=0, atol=0)
    assert bool((kept[1:] > kept[:-1]).all())  # walk order kept


def test_impossible_caps_and_bad_arguments_are_refused():
    eye = torch.eye(4)  # 4 orthogonal directions: no threshold > 0 merges them
    with pytest.raises(InvalidInputError, match="raise the cap"):
        build_psc_capped(eye, 0.9, 3)
    with pytest.raises(InvalidInputError, match="max_rows"):
        build_psc_capped(eye, 0.9, 0)
    with pytest.raises(InvalidInputError, match="step"):
        build_psc_capped(eye, 0.9, 3, step=0.0)
