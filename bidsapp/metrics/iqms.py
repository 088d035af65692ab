"""MRIQC's anatomical image-quality metrics (IQMs), from arrays and masks, vectorised.

Written from the definitions in MRIQC 24.0.2 (``mriqc/qc/anatomical.py`` and its ``StructuralQC``
interface; Esteban et al. 2017) and checked against those functions in ``tests/test_iqms.py``.
Keys are MRIQC's. Inputs, as in MRIQC's workflow:

* ``data``: the raw image (``qi_2`` on the hat mask, ``fwhm_*`` in the brain);
* ``tissues.corrected``: the N4-corrected image, harmonised here (WM median = 1000) for the
  summary statistics, SNRs, CNR, CJV, EFC, FBER and WM2MAX;
* ``tissues.bias``: the N4 field (``inu_*``), ``tissues.probs``/``labels`` (tissue statistics,
  ``icvs_*``, ``rpve_*``), and the masks of :mod:`bidsapp.anatomy.masks`.

See docs/metrics_iqms.md for every definition and the deliberate differences (``fwhm_*`` is
AFNI's classic first-difference estimator re-implemented, not 3dFWHMx).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage, optimize, special

from bidsapp.anatomy.masks import IQMMasks, compute_masks
from bidsapp.anatomy.segmentation import (
    Tissues,
    clip_intensities,
    clip_range,
    image_data,
    match_to_template,
    segment_tissues,
)

#: sqrt((4 - pi) / 2): Rayleigh correction of the background spread (Dietrich et al. 2007).
DIETRICH_FACTOR = 0.6551364
#: norm.ppf(3/4): makes the MAD a consistent estimate of a Gaussian's sigma.
MAD_NORMALISATION = 0.6744897501960817
#: AFNI's sigma-to-FWHM constant.
AFNI_FWHM_CONSTANT = 2.35482
#: MRIQC's seed and sizes for QI2 (Mortamet et al. 2009).
QI2_SEED = 1191935
QI2_MIN_VOXELS = 1000
QI2_MAX_VOXELS = 300_000
QI2_COIL_ELEMENTS = 32
QI2_BANDWIDTH = 4.0
TISSUE_LABELS = ("csf", "gm", "wm")
_S2 = ndimage.generate_binary_structure(3, 2)
_LOG_XMAX = float(np.log(np.finfo(float).max))


# --------------------------------------------------------------------------- helpers


def _bbox(mask: np.ndarray) -> tuple[slice, ...]:
    box = ndimage.find_objects(mask.astype(np.uint8))
    if not box or box[0] is None:
        return tuple(slice(0, 0) for _ in mask.shape)
    return box[0]


def harmonize(corrected: np.ndarray, wm_prob: np.ndarray) -> np.ndarray:
    """Scale so the median inside the eroded WM (p >= 0.9) is 1000; negatives set to 0."""
    wm = wm_prob >= 0.9
    box = _bbox(wm)
    core = np.zeros(wm.shape, dtype=bool)
    if wm.any():
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


# --------------------------------------------------------------------------- single IQMs


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


def _chi2_logpdf(x: np.ndarray, df: float) -> np.ndarray:
    return (
        special.xlogy(df / 2.0 - 1.0, x)
        - x / 2.0
        - special.gammaln(df / 2.0)
        - (math.log(2.0) * df / 2.0)
    )


def _chi2_fit(x: np.ndarray, df0: float) -> tuple[float, float, float]:
    """Maximum-likelihood chi-squared fit (df, loc, scale) of the sample ``x``.

    The result of ``scipy.stats.chi2.fit(x, df0)``, computed faster: same start (moments for
    df = 1, moved below the data if needed), same penalised negative log-likelihood (closed
    support; points outside it or with a non-finite log-density cost ``100 log(max float)``
    each) and same optimiser (Nelder-Mead). The log-density is evaluated once per distinct value
    and gathered back to the sample's order before summing, so every objective value is
    bitwise the same as scipy's: the fit is often degenerate on zero-filled backgrounds
    (loc -> 0, df < 2, unbounded likelihood), where Nelder-Mead stops at its iteration limit
    and its end point depends on the last bit of each evaluation.
    """
    values, inverse = np.unique(x, return_inverse=True)
    n = x.size
    mean, var = x.mean(), x.var()
    scale0 = np.sqrt(var / 2.0)  # chi2(df=1): mean 1, variance 2
    loc0 = mean - scale0 * 1.0
    if not np.isfinite(loc0):
        loc0 = 0.0
    if not (np.isfinite(scale0) and scale0 > 0):
        scale0 = 1.0
    lo, hi = values[0], values[-1]
    if not loc0 < lo:
        loc0, scale0 = lo - (hi - lo) * 0.1, 1.0

    def objective(theta):
        df, loc, scale = theta
        if not df > 0 or scale <= 0:
            return np.inf
        z = (values - loc) / scale
        inside = z >= 0
        logpdf = np.full(values.size, np.nan)
        logpdf[inside] = _chi2_logpdf(z[inside], df)
        finite = np.isfinite(logpdf)
        if finite.all():  # the common case: sum over the whole sample, in its order
            total, n_bad = np.sum(np.take(logpdf, inverse)), 0
        else:
            good = np.take(finite, inverse)
            total = np.sum(np.take(logpdf, inverse)[good])
            n_bad = n - np.count_nonzero(good)
        return -total + n_bad * _LOG_XMAX * 100 + n * np.log(scale)

    df, loc, scale = optimize.fmin(objective, [df0, loc0, scale0], disp=0)
    return float(df), float(loc), float(scale)


def _kde(values: np.ndarray, counts: np.ndarray, grid: np.ndarray, bandwidth: float):
    """Gaussian kernel density of weighted points at ``grid`` (exact sum, chunked)."""
    norm = 1.0 / (counts.sum() * bandwidth * math.sqrt(2 * math.pi))
    keep = (values > grid[0] - 12 * bandwidth) & (values < grid[-1] + 12 * bandwidth)
    values, counts = values[keep], counts[keep].astype(np.float64)
    out = np.zeros(grid.size)
    for start in range(0, values.size, 4096):
        v, c = values[start : start + 4096], counts[start : start + 4096]
        z = (grid[:, None] - v[None, :]) / bandwidth
        out += np.exp(-0.5 * z * z) @ c
    return out * norm


def qi_2(data: np.ndarray, hat: np.ndarray) -> float:
    """Mortamet's QI2: mean |KDE - chi2 fit| on the upper tail of the hat's intensities.

    As MRIQC: values scaled so the 99th percentile is 100, a random subsample of 300,000 values
    (``RandomState(1191935).choice``, with replacement) when there are more, Gaussian KDE with
    bandwidth 4 on 1000 points in [0, 110], chi2 fit with df starting at 32. Pass ``data`` and
    ``hat`` in RAS voxel order to draw the same subsample as MRIQC.
    """
    x = np.nan_to_num(data[hat].astype(np.float64), posinf=0.0)
    x[x < 0] = 0
    if (x > 0).sum() < QI2_MIN_VOXELS:
        return 0.0
    x *= 100 / np.percentile(x, 99)
    if x.size >= QI2_MAX_VOXELS:
        x = np.random.RandomState(QI2_SEED).choice(x, size=QI2_MAX_VOXELS)
    values, counts = np.unique(x, return_counts=True)
    if values.size > 20_000:  # continuous intensities: the KDE on a 0.01 grid (error < 1e-6)
        values, counts = np.unique(np.round(x, 2), return_counts=True)
    grid = np.linspace(0.0, 110, 1000)
    kde = _kde(values, counts, grid, QI2_BANDWIDTH)
    kdethi = int(np.argmax(kde[::-1] > kde.max() * 0.5))
    df, loc, scale = _chi2_fit(x, QI2_COIL_ELEMENTS)
    if not (df > 0 and scale > 0):
        return float("nan")
    z = (grid - loc) / scale
    pdf = np.zeros_like(grid)
    inside = z >= 0
    pdf[inside] = np.exp(_chi2_logpdf(z[inside], df)) / scale
    return float(np.abs(kde[-kdethi:] - pdf[-kdethi:]).mean())


def fwhm_classic(data: np.ndarray, mask: np.ndarray) -> tuple[float, float, float]:
    """AFNI's classic FWHM per voxel axis, in voxels (first differences, Forman et al. 1995).

    ``FWHM = 2.35482 sqrt(-1 / (4 ln(1 - var(diff) / (2 var))))`` with the variances (n - 1) of
    the voxels in ``mask`` and of the differences between mask neighbours; -1 when undefined.
    """
    box = _bbox(mask)
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


# --------------------------------------------------------------------------- entry points


def _ras_view(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    ornt = nib.io_orientation(affine)
    return nib.orientations.apply_orientation(array, ornt)


def compute_iqms(
    data: np.ndarray,
    zooms,
    masks: IQMMasks,
    tissues: Tissues,
    *,
    affine: np.ndarray | None = None,
) -> dict[str, float]:
    """Every anatomical IQM of one image, with MRIQC's keys.

    ``data`` is the raw image, ``zooms`` its voxel sizes (mm), ``masks``/``tissues`` from
    :func:`bidsapp.anatomy.masks.compute_masks` and
    :func:`bidsapp.anatomy.segmentation.segment_tissues`. ``affine`` (optional) puts the hat
    voxels in RAS order for QI2's random subsample, as MRIQC does after conforming to RAS.
    """
    zooms = [float(z) for z in zooms[:3]]
    axes = masks.ras_axes
    inudata = harmonize(tissues.corrected, tissues.probs["wm"])
    pvms = {k: tissues.probs[k] for k in TISSUE_LABELS}
    stats = summary_stats(inudata, {**pvms, "bg": masks.air})
    out: dict[str, float] = {}

    out["cjv"] = float(
        (stats["wm"]["mad"] + stats["gm"]["mad"])
        / abs(stats["wm"]["median"] - stats["gm"]["median"])
    )
    out["cnr"] = float(
        abs(stats["wm"]["median"] - stats["gm"]["median"])
        / math.sqrt(stats["bg"]["stdv"] ** 2 + stats["gm"]["stdv"] ** 2 + stats["wm"]["stdv"] ** 2)
    )
    out["efc"] = efc(inudata, masks.rot)
    out["fber"] = fber(inudata, masks.head, masks.rot)
    fwhm = fwhm_classic(data, masks.brain)
    fx, fy, fz = (fwhm[a] for a in axes)
    out.update(fwhm_x=fx, fwhm_y=fy, fwhm_z=fz, fwhm_avg=float(np.mean([fx, fy, fz])))
    for k, v in icvs(pvms).items():
        out[f"icvs_{k}"] = v
    for k, v in inu(tissues.bias, tissues.labels).items():
        out[f"inu_{k}"] = v
    out["qi_1"] = qi_1(masks.air, masks.art)
    if affine is not None:
        out["qi_2"] = qi_2(_ras_view(data, affine), _ras_view(masks.hat, affine))
    else:
        out["qi_2"] = qi_2(data, masks.hat)
    for k, v in rpve(pvms).items():
        out[f"rpve_{k}"] = v
    for name, axis in zip("xyz", axes):
        out[f"size_{name}"] = int(data.shape[axis])
        out[f"spacing_{name}"] = zooms[axis]
    snrs = {k: snr(stats[k]["median"], stats[k]["stdv"], stats[k]["n"]) for k in TISSUE_LABELS}
    for k in ("csf", "wm", "gm"):
        out[f"snr_{k}"] = snrs[k]
    out["snr_total"] = float(np.mean([snrs["csf"], snrs["wm"], snrs["gm"]]))
    snrd = {
        k: snr_dietrich(stats[k]["median"], stats["bg"]["mad"], stats["bg"]["stdv"])
        for k in ("csf", "wm", "gm")
    }
    for k, v in snrd.items():
        out[f"snrd_{k}"] = v
    out["snrd_total"] = float(np.mean(list(snrd.values())))
    for label in ("bg", "csf", "gm", "wm"):
        for stat in ("mean", "median", "p05", "p95", "stdv", "k", "mad", "n"):
            out[f"summary_{label}_{stat}"] = stats[label][stat]
    for k, v in tpm_overlap(pvms, masks.template).items():
        out[f"tpm_overlap_{k}"] = v
    out["wm2max"] = wm2max(inudata, stats["wm"]["median"])
    return dict(sorted(out.items()))


def iqm_differences(defaced: dict, original: dict) -> dict[str, float]:
    """``defaced - original`` for every IQM both hold."""
    return {k: float(defaced[k]) - float(original[k]) for k in defaced if k in original}


@dataclass(frozen=True)
class ImageIQMs:
    """IQMs of one image and the tissues and masks they came from."""

    iqms: dict[str, float]
    tissues: Tissues
    masks: IQMMasks


def image_iqms(
    image: nib.Nifti1Image,
    brain_mask: np.ndarray,
    *,
    tissues: Tissues | None = None,
    masks: IQMMasks | None = None,
    threads: int = 1,
    seed: int = 42,
) -> ImageIQMs:
    """IQMs of one image; ``tissues``/``masks`` are reused when given (computed once)."""
    if tissues is None:
        tissues = segment_tissues(image, brain_mask, threads=threads, seed=seed)
    data = image_data(image)
    if masks is None:
        masks = compute_masks(image, brain_mask, tissues, seed=seed, data=data)
    if masks.template is not None:  # T2w/FLAIR: name the classes after the template
        tissues = match_to_template(tissues, masks.template)
    zooms = image.header.get_zooms()[:3]
    iqms = compute_iqms(data, zooms, masks, tissues, affine=image.affine)
    return ImageIQMs(iqms=iqms, tissues=tissues, masks=masks)


def on_grid_of(image: nib.Nifti1Image, reference: nib.Nifti1Image) -> nib.Nifti1Image:
    """``image`` with its voxels in ``reference``'s order (same world grid, axes flipped or
    permuted, e.g. a tool writing radiological order); ValueError for any other grid."""
    if image.shape[:3] == reference.shape[:3] and np.allclose(
        image.affine, reference.affine, atol=1e-3
    ):
        return image
    transform = nib.orientations.ornt_transform(
        nib.io_orientation(image.affine), nib.io_orientation(reference.affine)
    )
    moved = image.as_reoriented(transform)
    if moved.shape[:3] != reference.shape[:3] or not np.allclose(
        moved.affine, reference.affine, atol=1e-3
    ):
        raise ValueError(
            f"defaced image {image.shape} is not on the original's grid {reference.shape}"
        )
    return moved


def iqms_for_defaced(
    original: nib.Nifti1Image,
    defaced: nib.Nifti1Image,
    reference: ImageIQMs,
    *,
    defaced_brain_mask: np.ndarray | None = None,
    defaced_tissues: Tissues | None = None,
    modes: tuple[str, ...] = ("original_masks", "recomputed_masks"),
    threads: int = 1,
    seed: int = 42,
) -> dict[str, dict]:
    """IQMs of a defaced image and their differences from the original's, in two modes.

    ``original_masks``: the original's masks, tissues and bias field; the defaced voxels are
    clipped with the original's bounds and divided by its field, so every change comes from
    what defacing did to the voxels. ``recomputed_masks``: brain mask, N4, segmentation and
    masks recomputed on the defaced image, as MRIQC would; ``defaced_brain_mask`` (deepbet) and
    ``defaced_tissues`` (:func:`segment_tissues`), when another metric already computed them on
    the defaced image (its own voxel order), are reused. Returns ``{mode: {"iqms": {...},
    "delta": {...}}}`` (delta = defaced - original).
    """
    moved = on_grid_of(defaced, original)
    if moved is not defaced:  # arrays computed on the defaced image follow it
        transform = nib.orientations.ornt_transform(
            nib.io_orientation(defaced.affine), nib.io_orientation(original.affine)
        )

        def follow(array):
            return nib.orientations.apply_orientation(array, transform)

        if defaced_brain_mask is not None:
            defaced_brain_mask = follow(defaced_brain_mask).astype(bool)
        if defaced_tissues is not None:
            defaced_tissues = Tissues(
                corrected=follow(defaced_tissues.corrected), bias=follow(defaced_tissues.bias),
                probs={k: follow(v) for k, v in defaced_tissues.probs.items()},
                labels=follow(defaced_tissues.labels),
            )  # fmt: skip
    defaced = moved
    data = image_data(defaced)
    zooms = defaced.header.get_zooms()[:3]
    out = {}
    if "original_masks" in modes:
        ref = reference.tissues
        low, high = clip_range(image_data(original))
        corrected = clip_intensities(data, low, high) / ref.bias
        tissues = Tissues(corrected=corrected, bias=ref.bias, probs=ref.probs, labels=ref.labels)
        iqms = compute_iqms(data, zooms, reference.masks, tissues, affine=defaced.affine)
        out["original_masks"] = {
            "iqms": iqms, "delta": iqm_differences(iqms, reference.iqms),
        }  # fmt: skip
    if "recomputed_masks" in modes:
        mask = defaced_brain_mask
        if mask is None:
            from bidsapp.anatomy.brainmask import deepbet_brain_mask

            mask = deepbet_brain_mask(defaced, threads=threads)
        result = image_iqms(defaced, mask, tissues=defaced_tissues, threads=threads, seed=seed)
        out["recomputed_masks"] = {
            "iqms": result.iqms, "delta": iqm_differences(result.iqms, reference.iqms),
            "masks": result.masks.info,
        }  # fmt: skip
    return out


def _json_ready(value):
    """Floats that JSON can hold (NaN/inf -> None), recursively."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    return value


def defacing_iqms(
    original: nib.Nifti1Image,
    brain_mask: np.ndarray,
    defaced: dict[str, nib.Nifti1Image],
    *,
    tissues: Tissues | None = None,
    reference: ImageIQMs | None = None,
    defaced_brain_masks: dict[str, np.ndarray] | None = None,
    defaced_tissues: dict[str, Tissues] | None = None,
    modes: tuple[str, ...] = ("original_masks", "recomputed_masks"),
    threads: int = 1,
    seed: int = 42,
) -> dict:
    """JSON-ready IQMs of an original and of each defacer's output, in both modes.

    ``tissues`` (from :func:`segment_tissues`, shared with the defacing metrics) or a whole
    ``reference`` (from :func:`image_iqms`) is reused when given, and so are brain masks and
    tissues already computed on the defaced images (``defaced_brain_masks``,
    ``defaced_tissues``: defacer -> array / ``Tissues``). Returns ``{"original": {...},
    "original_masks": {...}, "defacers": {name: {mode: {"iqms", "delta"}}}, "settings": {...}}``;
    NaN becomes ``null``.
    """
    from bidsapp.anatomy import segmentation

    if reference is None:
        reference = image_iqms(original, brain_mask, tissues=tissues, threads=threads, seed=seed)
    masks = defaced_brain_masks or {}
    tissues_of = defaced_tissues or {}
    out = {
        "original": reference.iqms,
        "original_masks": reference.masks.info,
        "defacers": {
            name: iqms_for_defaced(
                original,
                image,
                reference,
                defaced_brain_mask=masks.get(name),
                defaced_tissues=tissues_of.get(name),
                modes=modes,
                threads=threads,
                seed=seed,
            )
            for name, image in defaced.items()
        },
        "settings": {
            "definitions": "MRIQC 24.0.2 anatomical IQMs (re-implemented; see docs)",
            "n4_spacing_mm": segmentation.N4_SPACING_MM,
            "n4_iterations": list(segmentation.N4_ITERATIONS),
            "atropos_spacing_mm": segmentation.ATROPOS_SPACING_MM,
            "seed": seed,
            "delta": "defaced - original",
        },
    }
    return _json_ready(out)
