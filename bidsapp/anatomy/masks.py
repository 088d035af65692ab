"""The masks MRIQC's anatomical IQMs need, computed on the image's own voxel grid.

Following MRIQC 24.0.2's anatomical workflow (Esteban et al. 2017; Mortamet et al. 2009):

* head mask: gradient threshold of the INU-corrected image (``HeadMaskWorkflow``);
* rotation ("zero-frame") mask: voxels <= 0 after an opening, two largest components;
* hat mask: the background outside the head, without two slabs MRIQC treats as head: everything
  below the inion plane and the anterior half of the field of view below the glabella plane;
* artifact mask: hat voxels brighter than 10 MADs of the hat's positive voxels, away from the
  head, then opened; air mask = hat - artifacts;
* template tissue maps (CSF/GM/WM) in the image's space, for ``tpm_overlap_*``.

Template: TemplateFlow's MNI152NLin2009cAsym (MRIQC's) when its files are in
``TEMPLATEFLOW_HOME``, else the ICBM 2009a nonlinear symmetric T1 and GM/WM probability maps
bundled in the ``nilearn`` wheel, with CSF derived as the template's brain (T1 > 0) minus GM and
WM (:mod:`bidsapp.anatomy.templates`). The template brain is registered affinely
(``bidsapp.anatomy.registration.register_template``, Mattes MI, 4 mm) to the N4-corrected,
brain-masked image; MRIQC registers nonlinearly. The MNI landmarks MRIQC uses (glabella
(0, 90, -14), inion (0, -120, -14) mm) are mapped through that affine. Without either template,
the landmark planes fall back to 38 % of the brain's inferior-superior extent (where
z = -14 mm lies in the MNI brain) and the template maps are ``None``.

Deliberate differences from MRIQC, all documented in docs/metrics_iqms.md: the artifact mask uses
the distance to the head measured inside the hat (MRIQC 24.0.2 zeroes that distance inside the
hat, which empties its artifact mask); landmark slices outside the field of view are clamped; the
gradient's per-axis smoothing factor ``2 - zoom/min(zoom)`` is floored at 0.25 for thick slices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
from scipy import ndimage

from bidsapp.anatomy.segmentation import Tissues, image_data
from bidsapp.geometry import block_factors, block_mean, bounding_box

#: MNI coordinates (mm) of MRIQC's landmarks (``ArtifactMask`` defaults).
GLABELLA_MNI = (0.0, 90.0, -14.0)
INION_MNI = (0.0, -120.0, -14.0)
#: Fallback landmark height, as a fraction of the brain's inferior-superior extent.
LANDMARK_FRACTION = 0.38
ARTIFACT_ZSCORE = 10.0
_S2 = ndimage.generate_binary_structure(3, 2)
_S1 = ndimage.generate_binary_structure(3, 1)
_S2x2 = ndimage.iterate_structure(_S2, 2)


@dataclass(frozen=True)
class IQMMasks:
    """Masks of one image (boolean arrays on its grid) and what they were derived from."""

    brain: np.ndarray
    head: np.ndarray
    rot: np.ndarray
    hat: np.ndarray
    art: np.ndarray
    air: np.ndarray
    template: dict[str, np.ndarray] | None  # 'csf', 'gm', 'wm' probabilities or None
    ras_axes: tuple[int, int, int]  # voxel axis closest to x (R), y (A), z (S)
    info: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- orientation


def ras_axes(affine: np.ndarray) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """For world axes R, A, S: the closest voxel axis and whether it runs backwards."""
    ornt = nib.io_orientation(affine)
    axes, flips = [0, 0, 0], [False, False, False]
    for voxel_axis, (world_axis, direction) in enumerate(ornt):
        axes[int(world_axis)] = voxel_axis
        flips[int(world_axis)] = bool(direction < 0)
    return tuple(axes), tuple(flips)


def _axis_slab(shape, axis: int, flipped: bool, count: int, *, from_start: bool = True):
    """Index of the ``count`` first (RAS order) voxel planes along ``axis``."""
    n = shape[axis]
    count = int(np.clip(count, 0, n))
    index = [slice(None)] * 3
    if from_start != flipped:
        index[axis] = slice(0, count)
    else:
        index[axis] = slice(n - count, n)
    return tuple(index)


# --------------------------------------------------------------------------- template


def template_tissue_maps() -> dict | None:
    """The IQMs' template maps (:func:`bidsapp.anatomy.templates.tissue_maps`: TemplateFlow's
    MNI152NLin2009cAsym, or nilearn's ICBM 2009a maps offline)."""
    from bidsapp.anatomy.templates import tissue_maps

    return tissue_maps()


def register_mni(image: nib.Nifti1Image, brain_mask: np.ndarray, corrected: np.ndarray):
    """Affine registration of the MNI template brain to the brain-masked corrected image."""
    from bidsapp.anatomy.registration import Template, register_template

    tpl = template_tissue_maps()
    if tpl is None:
        return None
    template = Template(
        data=tpl["t1"],
        affine=tpl["affine"],
        brain_centroid_ras=tpl["brain_centroid"],
        name=tpl["source"].name,
    )
    moving = nib.Nifti1Image(np.where(brain_mask, corrected, 0).astype(np.float32), image.affine)
    return register_template(moving, template=template, brain_mask=brain_mask)


def _box_or_all(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """The bounding box of ``mask`` (+ ``margin``), or the whole grid when it is empty."""
    return bounding_box(mask, margin) or tuple(slice(0, n) for n in mask.shape)


def warp_template(registration, image: nib.Nifti1Image, brain_mask: np.ndarray) -> dict | None:
    """Template CSF/GM/WM maps resampled (trilinear) onto the image grid near the brain."""
    tpl = template_tissue_maps()
    if tpl is None or registration is None:
        return None
    zooms = np.asarray(image.header.get_zooms()[:3], dtype=float)
    box = _box_or_all(brain_mask, int(np.ceil(15.0 / zooms.min())))
    offset = np.eye(4)
    offset[:3, 3] = [s.start for s in box]
    sub_affine = image.affine @ offset
    sub_shape = tuple(s.stop - s.start for s in box)
    out = {}
    for name in ("csf", "gm", "wm"):
        full = np.zeros(image.shape[:3], dtype=np.float32)
        full[box] = registration.to_image(
            tpl[name], sub_shape, sub_affine, order=1, mode="constant", cval=0.0
        )
        out[name] = full
    return out


def landmark_planes(
    registration, image: nib.Nifti1Image, brain_mask: np.ndarray
) -> dict[str, float]:
    """Height (voxel index along S, counted from inferior) of the glabella and inion planes."""
    (_, _, s_axis), (_, _, s_flip) = ras_axes(image.affine)
    n = image.shape[s_axis]
    if registration is not None:
        inverse = np.linalg.inv(registration.image_to_template)
        world = nib.affines.apply_affine(inverse, np.array([GLABELLA_MNI, INION_MNI]))
        voxels = nib.affines.apply_affine(np.linalg.inv(image.affine), world)
        heights = voxels[:, s_axis]
        if s_flip:
            heights = n - 1 - heights
        return {"glabella": float(heights[0]), "inion": float(heights[1]), "source": "MNI"}
    profile = np.flatnonzero(brain_mask.any(axis=tuple(a for a in range(3) if a != s_axis)))
    low, high = (profile[0], profile[-1]) if profile.size else (0, n - 1)
    if s_flip:
        low, high = n - 1 - high, n - 1 - low
    height = float(low + LANDMARK_FRACTION * (high - low))
    return {"glabella": height, "inion": height, "source": "brain mask"}


# --------------------------------------------------------------------------- masks


def _keep_two_largest(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count <= 2:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    keep = np.argsort(sizes, kind="stable")[::-1][:2]
    return np.isin(labels, keep)


def rotation_mask(data: np.ndarray, min_voxels: int = 500) -> np.ndarray:
    """Zero-filled frame: voxels <= 0, opened, two largest components (MRIQC RotationMask)."""
    mask = np.pad(data <= 0, 1, mode="constant", constant_values=True)
    mask = ndimage.binary_opening(mask, structure=_S2)
    mask = _keep_two_largest(mask)[1:-1, 1:-1, 1:-1]
    if mask.sum() < min_voxels:
        return np.zeros(data.shape, dtype=bool)
    return mask


def enhance(corrected: np.ndarray, wm_weights: np.ndarray, seed: int = 42) -> np.ndarray:
    """Replace voxels above the 99.98th percentile by draws from the WM intensity distribution."""
    data = corrected.astype(np.float32, copy=True)
    positive = data[data > 0]
    if positive.size == 0:
        return data
    excess = data > np.percentile(positive, 99.98)
    weights = np.clip(wm_weights, 0, None)
    use = (weights > 0) & ~excess
    if not use.any():
        return data
    w, x = weights[use].astype(np.float64), data[use].astype(np.float64)
    mu = np.average(x, weights=w)
    sigma = np.sqrt(np.average((x - mu) ** 2, weights=w))
    rng = np.random.default_rng(seed)
    data[excess] = rng.normal(mu, sigma, size=int(excess.sum())).astype(np.float32)
    return data


def head_mask(
    enhanced: np.ndarray,
    brain_mask: np.ndarray,
    zooms,
    *,
    sigma: float = 4.0,
    threshold: float = 15.0,
) -> np.ndarray:
    """MRIQC's head mask: threshold of the smoothed gradient magnitude, closed and filled.

    The brain is part of the mask through its gradient set to 100. MRIQC 24.0.2 also means to add
    the brain mask dilated (``mask[segdata] = 1`` with a uint8 ``segdata``), but that line indexes
    the first axis and marks the first two sagittal planes instead; neither is done here.
    """
    data = enhanced.astype(np.float32, copy=True)
    data *= np.float32(100.0 / np.percentile(data, 99.5))
    data[brain_mask] = 100
    zooms = np.asarray(zooms[:3], dtype=float)
    factors = np.maximum(2.0 - zooms / zooms.min(), 0.25)
    grad = ndimage.gaussian_gradient_magnitude(data, sigma * factors, output=np.float32)
    grad *= np.float32(100.0 / np.percentile(grad, 99.5))
    grad[brain_mask] = 100
    mask = grad > threshold
    mask = ndimage.binary_closing(mask, _S2x2, iterations=2)
    mask = ndimage.binary_erosion(mask, _S2)
    mask = _keep_two_largest(mask)
    return ndimage.binary_fill_holes(mask, _S2x2)


def hat_mask(head: np.ndarray, affine: np.ndarray, planes: dict) -> np.ndarray:
    """The hat: background without the slabs MRIQC counts as head (below the landmarks)."""
    (_, a_axis, s_axis), (_, a_flip, s_flip) = ras_axes(affine)
    extended = head.copy()
    extended[_axis_slab(head.shape, s_axis, s_flip, int(planes["inion"]))] = True
    below = np.zeros(head.shape, dtype=bool)
    below[_axis_slab(head.shape, s_axis, s_flip, int(planes["glabella"]))] = True
    n_a = head.shape[a_axis]
    front = np.zeros(head.shape, dtype=bool)
    front[_axis_slab(head.shape, a_axis, a_flip, n_a - n_a // 2, from_start=False)] = True
    extended |= below & front
    return ~extended


def _distance_to(head: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Euclidean distance (voxels) from ``points`` (n, 3) outside ``head`` to the head."""
    from scipy.spatial import cKDTree

    boundary = head & ~ndimage.binary_erosion(head, _S1, border_value=1)
    tree = cKDTree(np.argwhere(boundary))
    return tree.query(points, k=1)[0]


def _largest_distance(head: np.ndarray, region: np.ndarray, zooms, spacing_mm: float = 2.0):
    """Largest distance (voxels) from ``region`` to ``head``, measured on a grid of about 2 mm."""
    factors = block_factors(zooms, spacing_mm)
    if max(factors) == 1:
        return float(ndimage.distance_transform_edt(~head)[region].max())
    coarse_head = block_mean(head.astype(np.float32), factors) > 0
    coarse_region = block_mean(region.astype(np.float32), factors) > 0
    distance = ndimage.distance_transform_edt(~coarse_head, sampling=factors)
    return float(distance[coarse_region].max()) if coarse_region.any() else 0.0


def artifact_mask(
    data: np.ndarray, hat: np.ndarray, head: np.ndarray, zooms=(1.0, 1.0, 1.0),
    zscore: float = ARTIFACT_ZSCORE,
) -> np.ndarray:  # fmt: skip
    """Hat voxels above ``zscore`` MADs of the hat's positive voxels, away from the head.

    Voxels closer to the head than 10 % of the largest head distance in the hat are not
    artifacts (that largest distance is measured on a 2 mm grid); the result is opened with a
    6-connected element (Mortamet et al. 2009).
    """
    art = np.zeros(data.shape, dtype=bool)
    values = data[hat]
    positive = values[values > 0]
    if positive.size < 10:
        return art
    spread = np.median(np.abs(positive - np.median(positive))) / 0.6744897501960817
    if spread <= 0:
        return art
    candidates = np.zeros(data.shape, dtype=bool)
    candidates[hat] = values > zscore * spread
    if not candidates.any():
        return art
    top = _largest_distance(head, hat, zooms)
    idx = np.argwhere(candidates)
    near = _distance_to(head, idx) < 0.10 * top
    candidates[tuple(idx[near].T)] = False
    box = _box_or_all(candidates, 2)
    art[box] = ndimage.binary_opening(candidates[box], _S1)
    return art


def compute_masks(
    image: nib.Nifti1Image,
    brain_mask: np.ndarray,
    tissues: Tissues,
    *,
    seed: int = 42,
    registration=None,
    data: np.ndarray | None = None,
) -> IQMMasks:
    """All masks of ``image`` from its brain mask and tissues (see the module docstring).

    ``registration`` (an MNI-to-image ``TemplateRegistration``) is computed when not given.
    """
    brain = np.asarray(brain_mask, dtype=bool)
    raw = image_data(image) if data is None else data
    zooms = [float(z) for z in image.header.get_zooms()[:3]]
    if registration is None:
        registration = register_mni(image, brain, tissues.corrected)
    template = warp_template(registration, image, brain)
    planes = landmark_planes(registration, image, brain)
    wm_weights = template["wm"] if template is not None else tissues.probs["wm"]
    head = head_mask(enhance(tissues.corrected, wm_weights, seed), brain, zooms)
    rot = rotation_mask(raw)
    hat = hat_mask(head, image.affine, planes)
    art = artifact_mask(raw, hat, head, zooms)
    air = hat & ~art
    axes, _ = ras_axes(image.affine)
    info = {
        "landmarks": planes,
        "template": None if template is None else template_tissue_maps()["source"].label,
        "registration": None if registration is None else registration.parameters,
        "voxels": {
            "brain": int(brain.sum()),
            "head": int(head.sum()),
            "rot": int(rot.sum()),
            "hat": int(hat.sum()),
            "art": int(art.sum()),
            "air": int(air.sum()),
        },
    }
    return IQMMasks(
        brain=brain, head=head, rot=rot, hat=hat, art=art, air=air, template=template,
        ras_axes=axes, info=info,
    )  # fmt: skip
