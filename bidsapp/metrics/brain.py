"""Brain preservation: did a defacer change any voxel of the brain, or near it?

The brain is the deepbet mask of the *original* image (Fisch et al. 2024). A voxel is changed
when its defaced value differs from the original one (the runner writes the defaced image in the
input's dtype, so an untouched voxel is bit-identical). The safety margin is the brain mask
dilated by ``MARGIN_MM`` (exact Euclidean distance in mm), the default of the brain guard.
"""

from __future__ import annotations

import numpy as np

from bidsapp.anatomy.brainmask import dilate_mm
from bidsapp.geometry import bounding_box

#: Safety margin (mm) around the brain, as the runner's default ``--guard-margin-mm``.
MARGIN_MM = 5.0


def changed_voxels(original: np.ndarray, defaced: np.ndarray) -> np.ndarray:
    """Boolean mask of voxels whose value differs (NaN equals NaN)."""
    original = np.asarray(original)
    defaced = np.asarray(defaced)
    if original.shape != defaced.shape:
        raise ValueError(f"shapes differ: {original.shape} vs {defaced.shape}")
    changed = original != defaced
    if np.issubdtype(original.dtype, np.floating) or np.issubdtype(defaced.dtype, np.floating):
        changed &= ~(np.isnan(original) & np.isnan(defaced))
    return changed


def margin_mask(brain_mask: np.ndarray, zooms, margin_mm: float = MARGIN_MM) -> np.ndarray:
    """The brain mask dilated by ``margin_mm`` (computed on its bounding box only)."""
    brain = np.asarray(brain_mask, dtype=bool)
    out = np.zeros_like(brain)
    if not brain.any():
        return out
    pad = [int(np.ceil(margin_mm / float(z))) + 1 for z in zooms[:3]]
    box = bounding_box(brain, pad)
    out[box] = dilate_mm(brain[box], zooms, margin_mm)
    return out


def brain_preservation(changed: np.ndarray, brain_mask: np.ndarray, zooms,
                       margin_mm: float = MARGIN_MM, margin: np.ndarray | None = None
                       ) -> dict[str, float | int | bool]:
    """Count, volume (ml) and percentage of changed voxels in the brain and brain + margin.

    ``margin`` (the brain dilated by ``margin_mm``, :func:`margin_mask`) may be passed to reuse
    it across defacers. ``brain_altered`` is True when any brain voxel changed.
    """
    changed = np.asarray(changed, dtype=bool)
    brain = np.asarray(brain_mask, dtype=bool)
    if margin is None:
        margin = margin_mask(brain, zooms, margin_mm)
    voxel_ml = float(np.prod([float(z) for z in zooms[:3]])) / 1000.0
    out: dict[str, float | int | bool] = {}
    for key, region in (("brain", brain), ("margin", np.asarray(margin, dtype=bool))):
        count = int(np.count_nonzero(changed & region))
        size = int(np.count_nonzero(region))
        out[f"{key}_changed_voxels"] = count
        out[f"{key}_changed_ml"] = round(count * voxel_ml, 4)
        out[f"{key}_changed_pct"] = 100.0 * count / size if size else float("nan")
    out["brain_altered"] = bool(out["brain_changed_voxels"] > 0)
    out["margin_mm"] = float(margin_mm)
    out["changed_voxels"] = int(np.count_nonzero(changed))
    out["changed_ml"] = round(out["changed_voxels"] * voxel_ml, 4)
    return out
