"""Harmonisation (WM median = 1000) and MRIQC's weighted summary statistics per tissue."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from bidsapp.geometry import bounding_box

#: norm.ppf(3/4): makes the MAD a consistent estimate of a Gaussian's sigma.
MAD_NORMALISATION = 0.6744897501960817
_S2 = ndimage.generate_binary_structure(3, 2)


def harmonize(corrected: np.ndarray, wm_prob: np.ndarray) -> np.ndarray:
    """Scale so the median inside the eroded WM (p >= 0.9) is 1000; negatives set to 0."""
    wm = wm_prob >= 0.9
    box = bounding_box(wm)
    core = np.zeros(wm.shape, dtype=bool)
    if box is not None:
        padded = np.pad(wm[box], 1)
        core[box] = ndimage.binary_erosion(padded, _S2)[1:-1, 1:-1, 1:-1]
    values = corrected[core] if core.any() else corrected[wm]
    scale = 1000.0 / float(np.median(values)) if values.size else 1.0
    out = np.nan_to_num(corrected.astype(np.float32) * np.float32(scale), nan=0.0, posinf=0.0)
    out[out < 0] = 0
    return out


class _Rounded:
    """The image rounded to integers, with the set of values it holds (for weighted quantiles)."""

    def __init__(self, data: np.ndarray):
        rounded = np.rint(data.ravel())
        self.offset = float(rounded.min()) if rounded.size else 0.0
        span = float(rounded.max()) - self.offset if rounded.size else 0.0
        self.dense = span < 5e6
        if self.dense:
            present = np.bincount((rounded - self.offset).astype(np.int64)) > 0
            self.values = np.flatnonzero(present).astype(np.float64) + self.offset
            self.slot = np.cumsum(present) - 1  # bin -> position among present values
        else:  # pragma: no cover - images with absurd intensity ranges
            self.values = np.unique(rounded)

    def weighted_quantiles(self, x: np.ndarray, w: np.ndarray, probs) -> np.ndarray:
        """statsmodels' ``DescrStatsW.quantile`` (SAS definition) over the whole image's values.

        Values of the image with no weight still count as neighbours when a target falls exactly
        on a cumulative weight, as in statsmodels (it groups all voxels by value).
        """
        rx = np.rint(x)
        if self.dense:
            pos = self.slot[(rx - self.offset).astype(np.int64)]
        else:  # pragma: no cover
            pos = np.searchsorted(self.values, rx)
        sums = np.bincount(pos, weights=w, minlength=self.values.size)
        cweights = np.cumsum(sums)
        targets = np.asarray(probs, dtype=float) * cweights[-1]
        ii = np.searchsorted(cweights, targets)
        ii = np.minimum(ii, self.values.size - 1)
        out = self.values[ii].copy()
        hit = (np.abs(targets - cweights[ii]) < 1e-10) & (ii < self.values.size - 1)
        out[hit] = (self.values[ii[hit]] + self.values[ii[hit] + 1]) / 2
        return out


def _kurtosis(x: np.ndarray) -> float:
    """Fisher kurtosis with the biased moments (scipy's default)."""
    x = x.astype(np.float64)
    d = x - x.mean()
    m2 = np.mean(d * d)
    return float(np.mean((d * d) ** 2) / (m2 * m2) - 3.0) if m2 > 0 else float("nan")


def summary_stats(data: np.ndarray, weights: dict[str, np.ndarray]) -> dict[str, dict]:
    """Weighted mean, median, p05, p95 and stdv (data rounded to integers, weights to 0.001);
    kurtosis ``k`` and MAD (about the weighted median) on the voxels above half the maximum
    weight; ``n`` the sum of the weights. MRIQC's ``summary_stats``."""
    rounded = _Rounded(data)
    flat = data.ravel()
    out = {}
    for label, prob in weights.items():
        p = prob.ravel()
        idx = np.flatnonzero(p)
        pw = p[idx].astype(np.float32)
        w = np.round(pw, 3).astype(np.float64)
        x = flat[idx].astype(np.float64)
        rx = np.rint(x)
        total = w.sum()
        if total > 0:
            mean = float(np.dot(w, rx) / total)
            std = float(np.sqrt(np.dot(w, (rx - mean) ** 2) / total))
            p05, median, p95 = rounded.weighted_quantiles(x, w, (0.05, 0.5, 0.95))
        else:
            mean = std = p05 = median = p95 = float("nan")
        top = float(pw.max()) if pw.size else 0.0
        strong = x[pw > 0.5 * top] if top > 0 else x[:0]
        if strong.size:
            mad = float(np.median(np.abs(strong - median)) / MAD_NORMALISATION)
            kurt = _kurtosis(strong)
        else:
            mad = kurt = float("nan")
        out[label] = {
            "mean": mean, "median": float(median), "p95": float(p95), "p05": float(p05),
            "k": kurt, "stdv": std, "mad": mad, "n": float(p[idx].astype(np.float64).sum()),
        }  # fmt: skip
    return out
