"""Pair and record level: a defaced image's IQMs against its original's, and the JSON-ready
IQM section of an original's record with every defacer's."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np

from bidsapp.anatomy.segmentation import Tissues, clip_intensities, clip_range, image_data
from bidsapp.metrics.iqms.image import ImageIQMs, image_iqms, iqms_from_arrays


def iqm_differences(defaced: dict, original: dict) -> dict[str, float]:
    """``defaced - original`` for every IQM both hold."""
    return {k: float(defaced[k]) - float(original[k]) for k in defaced if k in original}


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


def pair_iqms(
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
        iqms = iqms_from_arrays(data, zooms, reference.masks, tissues,
                                affine=defaced.affine)
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


def record_iqms(
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
            name: pair_iqms(
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
