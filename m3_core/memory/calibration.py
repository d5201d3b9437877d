"""Relevancy temperature fitting (temperature scaling, Guo et al. 2017) for closed
vocabularies: rank margins of decoded features against the vocabulary, the real feature
map's top-k ranking as the target, and the temperature that makes sigmoid(margin / T) best
predict it (see :mod:`m3_core.memory.grounding` for where the fitted values live)."""

from __future__ import annotations

import math

import torch

from m3_core.errors import InvalidInputError

TEMPERATURE_RANGE = (1e-3, 1.0)
TOP_FRACTION = 0.005  # closed vocabulary: the text must rank in the top 0.5 % (at least 1st)


def vocabulary_top_k(size: int) -> int:
    """``k`` of the closed-vocabulary relevancy (m3_core.query.relevancy) for a vocabulary of
    ``size`` entries: the top ``TOP_FRACTION`` of it, at least the best entry."""
    return max(1, round(size * TOP_FRACTION))


def rank_margins(cosines: torch.Tensor, k: int) -> torch.Tensor:  # [M, K] -> [M, K]
    """Per sample and entry j: cos_j minus the k-th largest cosine of the *other* entries
    (> 0 exactly when j ranks in the top k; m3_core.query.relevancy, closed vocabulary)."""
    k = min(int(k), cosines.shape[1] - 1)
    vals = cosines.topk(k + 1, dim=1).values  # [M, k + 1]
    inside = cosines >= vals[:, k - 1 : k]  # j is among the k best
    return cosines - torch.where(inside, vals[:, k : k + 1], vals[:, k - 1 : k])


def fit_temperature(
    margins: torch.Tensor,  # [...] rank margins of the rendered features (rank_margins)
    positives: torch.Tensor,  # [...] bool: the entry ranks in the real feature's top k
    bounds: tuple[float, float] = TEMPERATURE_RANGE,
) -> float:
    """The temperature T for which sigmoid(margin / T) best predicts ``positives`` (mean
    binary cross-entropy; golden-section search on log T within ``bounds``: the loss is
    convex in 1/T)."""
    if margins.shape != positives.shape or margins.numel() == 0:
        raise InvalidInputError("fit_temperature needs margins and positives of one shape, > 0")
    z = margins.double().reshape(-1)
    # BCE(z / T, y) = mean(softplus(z / T)) - mean(y z) / T: the second mean is computed once
    yz = float((z * positives.reshape(-1).double()).mean())
    buf = torch.empty_like(z)

    def nll(log_t: float) -> float:
        inv = math.exp(-log_t)
        return float(torch.nn.functional.softplus(torch.mul(z, inv, out=buf)).mean()) - yz * inv

    a, b = math.log(bounds[0]), math.log(bounds[1])
    g = (math.sqrt(5) - 1) / 2
    x1, x2 = b - g * (b - a), a + g * (b - a)
    f1, f2 = nll(x1), nll(x2)
    for _ in range(60):
        if f1 <= f2:
            b, x2, f2 = x2, x1, f1
            x1 = b - g * (b - a)
            f1 = nll(x1)
        else:
            a, x1, f1 = x1, x2, f2
            x2 = a + g * (b - a)
            f2 = nll(x2)
    return float(math.exp((a + b) / 2))


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def calibration_samples(
    memory, name: str, qmap: torch.Tensor, grid: torch.Tensor, vocabulary: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One view's (margins [M, K], positives [M, K]) for :func:`fit_temperature`: the rendered
    query map [H, W, Q] sampled at the centres of the real feature grid [h, w, d] (bilinear),
    decoded, ranked against the vocabulary [K, d] (:func:`rank_margins`); positive = the entry
    ranks in the top k of the real cell's feature. Cells whose real feature is all zero (no
    data) are skipped."""
    from m3_core.data.features import sample_bilinear

    h, w, d = grid.shape
    v, u = torch.meshgrid(
        (torch.arange(h, device=grid.device) + 0.5) / h,
        (torch.arange(w, device=grid.device) + 0.5) / w,
        indexing="ij",
    )
    uv = torch.stack([u.reshape(-1), v.reshape(-1)], dim=-1)  # [h*w, 2]
    q = sample_bilinear(qmap[..., memory.layout.slice(name)], uv.to(qmap.device))
    pred = _unit(memory.decode(name, q).float())  # [h*w, d]
    real = grid.reshape(-1, d).float().to(pred.device)
    ok = real.norm(dim=-1) > 0
    voc = _unit(vocabulary.float().to(pred.device))  # [K, d]
    if voc.shape[0] < 2:  # nothing to rank against
        return pred.new_zeros(0, voc.shape[0]), torch.zeros(0, voc.shape[0], dtype=torch.bool)
    k = vocabulary_top_k(voc.shape[0])
    return rank_margins(pred[ok] @ voc.T, k), rank_margins(_unit(real[ok]) @ voc.T, k) > 0


class Calibration:
    """Collects :func:`calibration_samples` per feature over rendered query maps (at most
    ``max_entries`` cells x vocabulary entries per feature) and fits the temperatures."""

    def __init__(self, memory, calibration, max_entries: int) -> None:
        self.memory, self.max_entries = memory, max_entries
        self.calibration = dict(calibration or {})
        self.grids = {n: list(v[1]) for n, v in self.calibration.items()}
        self.samples: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {
            n: [] for n in self.calibration
        }
        self.counts = dict.fromkeys(self.calibration, 0)

    def on_view(self, k: int, qmap: torch.Tensor) -> None:
        with torch.no_grad():
            for name, (vocab, _) in self.calibration.items():
                grid = self.grids[name][k] if k < len(self.grids[name]) else None
                if grid is None or self.counts[name] >= self.max_entries:
                    continue
                margins, pos = calibration_samples(self.memory, name, qmap, grid, vocab)
                self.samples[name].append((margins, pos))
                self.counts[name] += margins.numel()

    def temperatures(self) -> dict[str, float]:
        temps = {}
        for name, parts in self.samples.items():
            if parts:
                margins = torch.cat([m for m, _ in parts])
                if margins.numel():
                    temps[name] = fit_temperature(margins, torch.cat([y for _, y in parts]))
        return temps
