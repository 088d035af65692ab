"""The single IQMs: SNRs, EFC, FBER, WM2MAX, QI1, FWHM, tissue volumes, rPVE, overlaps, INU."""

from __future__ import annotations

import math

import numpy as np

from bidsapp.geometry import bounding_box

#: sqrt((4 - pi) / 2): Rayleigh correction of the background spread (Dietrich et al. 2007).
DIETRICH_FACTOR = 0.6551364
#: AFNI's sigma-to-FWHM constant.
AFNI_FWHM_CONSTANT = 2.35482
TISSUE_LABELS = ("csf", "gm", "wm")


def snr(median: float, stdv: float, n: float) -> float:
    return float(median / (stdv * math.sqrt(n / (n - 1))))


def snr_dietrich(median: float, mad_air: float, sigma_air: float) -> float:
    if mad_air > 1.0:
        return float(DIETRICH_FACTOR * median / mad_air)
    return float(DIETRICH_FACTOR * median / sigma_air) if sigma_air > 1e-3 else -1.0


def efc(data: np.ndarray, rot: np.ndarray) -> float:
    """Entropy focus criterion (Atkinson 1997), normalised by its maximum, outside ``rot``."""
    x = data[~rot]
    n = x.size
    e_max = n * (1.0 / math.sqrt(n)) * math.log(1.0 / math.sqrt(n))
    x = x[x != 0].astype(np.float64)  # zeros add nothing: 0 * log(1e-16 / b_max)
    b_max = math.sqrt(float(np.dot(x, x)))
    return float(np.sum((x / b_max) * np.log((x + 1e-16) / b_max)) / e_max)


def fber(data: np.ndarray, head: np.ndarray, rot: np.ndarray) -> float:
    """Median energy in the head over median energy outside it (and outside ``rot``)."""
    fg = np.median(np.square(np.abs(data[head]), dtype=np.float64))
    bg_values = data[~head & ~rot]
    bg = np.median(np.square(np.abs(bg_values), dtype=np.float64)) if bg_values.size else np.nan
    if bg < 1e-3:
        return -1.0
    return float(fg / bg)


def wm2max(data: np.ndarray, median_wm: float) -> float:
    return float(median_wm / np.percentile(data, 99.95))


def qi_1(air: np.ndarray, art: np.ndarray) -> float:
    n_air = int(air.sum())
    if n_air < 1:
        return -1.0
    n_art = int(art.sum())
    return float(n_art / (n_air + n_art))


def fwhm_classic(data: np.ndarray, mask: np.ndarray) -> tuple[float, float, float]:
    """AFNI's classic FWHM per voxel axis, in voxels (first differences, Forman et al. 1995).

    ``FWHM = 2.35482 sqrt(-1 / (4 ln(1 - var(diff) / (2 var))))`` with the variances (n - 1) of
    the voxels in ``mask`` and of the differences between mask neighbours; -1 when undefined.
    """
    box = bounding_box(mask)
    if box is None:
        return (-1.0, -1.0, -1.0)
    m = mask[box]
    x = data[box].astype(np.float64)
    values = x[m]
    if values.size < 9 or not np.any(values):
        return (-1.0, -1.0, -1.0)
    var = values.var(ddof=1)
    out = []
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        pair = m[tuple(lo)] & m[tuple(hi)]
        diff = (x[tuple(hi)] - x[tuple(lo)])[pair]
        var_d = diff.var(ddof=1) if diff.size >= 6 else 0.0
        arg = 1.0 - 0.5 * var_d / var if var > 0 else 0.0
        ok = 0.0 < arg < 1.0
        out.append(AFNI_FWHM_CONSTANT * math.sqrt(-1.0 / (4.0 * math.log(arg))) if ok else -1.0)
    return tuple(out)


def icvs(probs: dict[str, np.ndarray]) -> dict[str, float]:
    sums = {k: float(probs[k].sum(dtype=np.float64)) for k in TISSUE_LABELS}
    total = sum(sums.values())
    return {k: v / total for k, v in sums.items()}


def rpve(probs: dict[str, np.ndarray]) -> dict[str, float]:
    """Residual partial-volume error, as MRIQC codes it: after clipping to [0, 1] and zeroing
    values outside [P2, P98] (of the non-zero values), sum p over p > 0.5 plus (1 - p) over
    every other voxel of the image, divided by the number of non-zero voxels."""
    out = {}
    for k in TISSUE_LABELS:
        p = probs[k].ravel()
        nz = np.minimum(p[p > 0].astype(np.float64), 1.0)
        if nz.size == 0:
            out[k] = float("nan")
            continue
        lo, hi = np.percentile(nz, [2, 98])
        kept = nz[(nz >= lo) & (nz <= hi)]
        high = kept[kept > 0.5].sum()
        low = (1.0 - kept[kept <= 0.5]).sum()
        out[k] = float((high + low + (p.size - kept.size)) / nz.size)
    return out


def tpm_overlap(probs: dict[str, np.ndarray], template: dict[str, np.ndarray] | None):
    """Fuzzy Jaccard sum(min) / sum(max) of each posterior with the template's map."""
    out = {}
    for k in TISSUE_LABELS:
        if template is None:
            out[k] = float("nan")
            continue
        a, b = probs[k], template[k]
        support = (a > 0) | (b > 0)
        x, y = a[support].astype(np.float64), b[support].astype(np.float64)
        out[k] = float(np.minimum(x, y).sum() / np.maximum(x, y).sum())
    return out


def inu(bias: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    values = bias[labels > 0].astype(np.float64)
    p5, p50, p95 = np.percentile(values, [5, 50, 95])
    return {"range": float(abs(p95 - p5)), "med": float(p50)}
