"""N4 bias correction and 3-class brain tissue segmentation (antspyx), fast and deterministic.

Steps, following MRIQC's anatomical workflow where it matters for its IQMs:

1. Intensity clipping as MRIQC's ``pre_clip`` (percentiles 10 and 99.9 of the positive voxels,
   rescaled to [0, 255] and rounded to integers); the percentiles are taken on the raw voxels,
   not on a median-filtered copy.
2. N4 (Tustison et al. 2010) fitted inside the brain mask on a copy block-averaged to about
   ``N4_SPACING_MM`` and cropped to the brain's bounding box (4 levels x 50 iterations, as MRIQC);
   the log field is interpolated (trilinear) back to the image grid. At full resolution N4 takes
   30 s or more; on the coarse copy 1-3 s. The field is smooth at that scale by construction.
3. Atropos (Avants et al. 2011), k-means initialisation, MRF 0.01 (radius 1), on a copy
   subsampled to about ``ATROPOS_SPACING_MM`` (every n-th voxel, so intensities are not blurred).
   The Gaussian parameters of its three classes then give the full-resolution posteriors in one
   E-step (no MRF at full resolution). MRIQC initialises Atropos with MNI priors (weight 0.1)
   instead. Classes are ordered by mean intensity, dark to bright: CSF, GM, WM (T1w contrast);
   :func:`match_to_template` renames them for other contrasts once a template is registered.

Determinism: the work is done in RAS voxel order whatever the storage order; ITK runs with
``threads`` threads (set before ITK is first loaded in the process), Atropos with a fixed seed
(``-r 0``), and everything else is plain numpy.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from bidsapp.geometry import block_factors, block_mean, bounding_box

#: Target spacing (mm) of the copy N4 is fitted on.
N4_SPACING_MM = 8.0
#: N4 iterations per fitting level (MRIQC: 4 levels x 50).
N4_ITERATIONS = (50, 50, 50, 50)
#: Target spacing (mm) of the subsampled copy Atropos estimates the class parameters on.
ATROPOS_SPACING_MM = 3.0
#: MRIQC's ``pre_clip`` percentiles.
CLIP_PERCENTILES = (10.0, 99.9)
TISSUES = ("csf", "gm", "wm")


@dataclass(frozen=True)
class Tissues:
    """N4-corrected image, bias field, tissue posteriors and labels, on the image grid."""

    corrected: np.ndarray  # float32, clipped to integers in [0, 255] then divided by ``bias``
    bias: np.ndarray  # float32 multiplicative field (image = corrected * bias)
    probs: dict[str, np.ndarray]  # 'csf', 'gm', 'wm' -> float32 posteriors, 0 outside the brain
    labels: np.ndarray  # uint8: 0 background, 1 CSF, 2 GM, 3 WM


def image_data(image: nib.Nifti1Image) -> np.ndarray:
    """The first 3D volume of an image as finite float32."""
    data = np.asanyarray(image.dataobj)
    if data.ndim > 3:
        data = data.reshape(data.shape[:3] + (-1,))[..., 0]
    return np.nan_to_num(np.asarray(data, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)


def clip_range(data: np.ndarray, percentiles=CLIP_PERCENTILES) -> tuple[float, float]:
    """MRIQC's ``pre_clip`` bounds: percentiles of the positive voxels (not median-filtered)."""
    values = data[data > 0]
    if values.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(values, percentiles)
    return max(float(low), 0.0), float(high)


def clip_intensities(data: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip to [low, high], rescale to [0, 255] and round to integers (float32), as MRIQC."""
    span = high - low if high > low else 1.0
    out = np.clip(data, low, high).astype(np.float32)
    out -= np.float32(low)
    out *= np.float32(255.0 / span)
    return np.rint(out, out=out)


def _interp_axis(data: np.ndarray, axis: int, coords: np.ndarray) -> np.ndarray:
    """Linear interpolation along one axis at fractional ``coords`` (clamped to the edges)."""
    n = data.shape[axis]
    coords = np.clip(coords, 0, n - 1)
    lo = np.minimum(np.floor(coords).astype(np.intp), max(n - 2, 0))
    hi = np.minimum(lo + 1, n - 1)
    weight = (coords - lo).astype(np.float32)
    shape = [1] * data.ndim
    shape[axis] = -1
    weight = weight.reshape(shape)
    return np.take(data, lo, axis=axis) * (1 - weight) + np.take(data, hi, axis=axis) * weight


def _upsample(coarse: np.ndarray, factors, origin, shape) -> np.ndarray:
    """Trilinear interpolation of a block-averaged grid back onto the fine grid."""
    out = coarse.astype(np.float32)
    for axis in range(3):
        fine = np.arange(shape[axis], dtype=np.float64)
        coords = (fine - origin[axis] - (factors[axis] - 1) / 2.0) / factors[axis]
        out = _interp_axis(out, axis, coords)
    return out


def _ants_image(data: np.ndarray, spacing):
    import ants

    return ants.from_numpy(
        np.ascontiguousarray(data, dtype=np.float32), spacing=tuple(float(s) for s in spacing)
    )


def _set_threads(threads: int) -> None:
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(max(1, int(threads)))


def n4_bias_field(
    clipped: np.ndarray,
    brain_mask: np.ndarray,
    zooms,
    *,
    spacing_mm: float = N4_SPACING_MM,
    iterations=N4_ITERATIONS,
    margin_mm: float = 12.0,
) -> np.ndarray:
    """N4 bias field (float32, image grid) fitted inside ``brain_mask`` on a coarse copy."""
    import ants

    factors = block_factors(zooms, spacing_mm)
    # crop to the brain's bounding box (+ margin) before averaging: fewer voxels per iteration
    margin = [int(np.ceil(margin_mm / float(z))) for z in zooms[:3]]
    box = bounding_box(brain_mask, margin)  # never empty: segment_tissues checks the mask
    small = block_mean(clipped[box], factors)
    small_mask = block_mean(brain_mask[box].astype(np.float32), factors) > 0.5
    if small_mask.sum() < 8:  # too small a brain for a field: no correction
        return np.ones(clipped.shape, dtype=np.float32)
    spacing = [float(z) * f for z, f in zip(zooms[:3], factors)]
    field = ants.n4_bias_field_correction(
        _ants_image(small, spacing),
        mask=_ants_image(small_mask.astype(np.float32), spacing),
        shrink_factor=1,
        convergence={"iters": list(iterations), "tol": 1e-7},
        return_bias_field=True,
    ).numpy()
    log_field = np.log(np.clip(field, 1e-6, None)).astype(np.float32)
    origin = [s.start for s in box]
    return np.exp(_upsample(log_field, factors, origin, clipped.shape)).astype(np.float32)


def _atropos_parameters(
    corrected: np.ndarray, brain_mask: np.ndarray, zooms, spacing_mm: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Means, variances and proportions of Atropos' 3 classes on a subsampled copy.

    antspyx's ``atropos`` writes its posteriors to files named by :func:`tempfile.mktemp` and
    never removes them (about 300 kB per call, in ``/tmp``): here they go to a folder of their
    own, removed once read.
    """
    import tempfile

    import ants

    step = block_factors(zooms, spacing_mm)
    sub = (slice(None, None, step[0]), slice(None, None, step[1]), slice(None, None, step[2]))
    data, mask = corrected[sub], brain_mask[sub]
    spacing = [float(z) * s for z, s in zip(zooms[:3], step)]
    with tempfile.TemporaryDirectory(prefix="bidsapp-atropos-") as scratch:
        previous, tempfile.tempdir = tempfile.tempdir, scratch
        try:
            result = ants.atropos(
                a=_ants_image(data * mask, spacing),
                x=_ants_image(mask.astype(np.float32), spacing),
                i="Kmeans[3]",
                m="[0.01,1x1x1]",
                c="[5,0]",
                r=0,
                v=0,
            )
            posts = np.stack([p.numpy()[mask] for p in result["probabilityimages"]])
        finally:
            tempfile.tempdir = previous
    values = data[mask].astype(np.float64)
    posts = posts.astype(np.float64)
    weights = posts.sum(axis=1) + 1e-12
    means = posts @ values / weights
    variances = (posts * (values[None] - means[:, None]) ** 2).sum(axis=1) / weights
    variances = np.maximum(variances, 1e-6 * max(float(values.var()), 1e-12))
    order = np.argsort(means)
    return means[order], variances[order], (weights / weights.sum())[order]


def _posteriors(values: np.ndarray, means, variances, proportions) -> np.ndarray:
    """Gaussian-mixture posteriors (3, n) of ``values`` (float32)."""
    values = values.astype(np.float32)
    loglik = np.empty((len(means), values.size), dtype=np.float32)
    for k, (mu, var, pi) in enumerate(zip(means, variances, proportions)):
        const = np.log(pi) - 0.5 * np.log(2 * np.pi * var)
        loglik[k] = np.float32(const) - (values - np.float32(mu)) ** 2 * np.float32(0.5 / var)
    loglik -= loglik.max(axis=0)
    np.exp(loglik, out=loglik)
    loglik /= loglik.sum(axis=0)
    return loglik


def segment_tissues(
    image: nib.Nifti1Image, brain_mask: np.ndarray, *, threads: int = 1, seed: int = 42
) -> Tissues:
    """N4-correct ``image`` and segment CSF/GM/WM inside ``brain_mask`` (image grid).

    ``seed`` is given to ITK (``ANTS_RANDOM_SEED``); Atropos itself runs with a fixed seed.
    """
    _set_threads(threads)
    os.environ["ANTS_RANDOM_SEED"] = str(int(seed))
    import ants  # noqa: F401  (after the thread setting)

    brain_mask = np.asarray(brain_mask, dtype=bool)
    if brain_mask.shape != image.shape[:3]:
        raise ValueError(f"brain mask {brain_mask.shape} does not match image {image.shape}")
    if brain_mask.sum() < 100:
        raise ValueError("brain mask has fewer than 100 voxels")
    # work in RAS voxel order, so the result does not depend on how the voxels are stored
    ornt = nib.io_orientation(image.affine)
    back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), ornt)

    def ras(array):
        return np.ascontiguousarray(nib.orientations.apply_orientation(array, ornt))

    def native(array):
        return np.ascontiguousarray(nib.orientations.apply_orientation(array, back))

    native_zooms = [float(z) for z in image.header.get_zooms()[:3]]
    zooms = [0.0, 0.0, 0.0]
    for axis, (world, _) in enumerate(ornt):
        zooms[int(world)] = native_zooms[axis]
    data = ras(image_data(image))
    brain_mask = ras(brain_mask)
    clipped = clip_intensities(data, *clip_range(data))
    bias = n4_bias_field(clipped, brain_mask, zooms)
    corrected = clipped / bias

    means, variances, proportions = _atropos_parameters(
        corrected, brain_mask, zooms, ATROPOS_SPACING_MM
    )
    posts = _posteriors(corrected[brain_mask], means, variances, proportions)
    probs = {}
    for k, name in enumerate(TISSUES):
        full = np.zeros(data.shape, dtype=np.float32)
        full[brain_mask] = posts[k]
        probs[name] = native(full)
    labels = np.zeros(data.shape, dtype=np.uint8)
    labels[brain_mask] = (np.argmax(posts, axis=0) + 1).astype(np.uint8)
    return Tissues(
        corrected=native(corrected.astype(np.float32)), bias=native(bias), probs=probs,
        labels=native(labels),
    )  # fmt: skip


def match_to_template(tissues: Tissues, template: dict[str, np.ndarray]) -> Tissues:
    """Rename the three classes after the template maps they overlap best (any contrast).

    ``segment_tissues`` names classes by intensity as in a T1w image; in a T2w (CSF brightest)
    or FLAIR (GM brighter than WM) image the order differs. The permutation maximising the sum of
    Dice-like overlaps ``2 sum(p_i t_j) / (sum p_i + sum t_j)`` with the template's CSF/GM/WM
    maps (registered to the image) is applied; for T1w images it is the identity.
    """
    brain = tissues.labels > 0
    ours = [tissues.probs[k][brain].astype(np.float64) for k in TISSUES]
    theirs = [template[k][brain].astype(np.float64) for k in TISSUES]
    overlap = np.array(
        [[2 * np.dot(p, t) / (p.sum() + t.sum() + 1e-12) for t in theirs] for p in ours]
    )
    perm = max(
        itertools.permutations(range(3)), key=lambda q: sum(overlap[i, q[i]] for i in range(3))
    )
    if perm == (0, 1, 2):
        return tissues
    probs = {TISSUES[perm[i]]: tissues.probs[TISSUES[i]] for i in range(3)}
    lut = np.array([0] + [perm[i] + 1 for i in range(3)], dtype=np.uint8)
    return Tissues(
        corrected=tissues.corrected, bias=tissues.bias, probs=probs, labels=lut[tissues.labels]
    )
