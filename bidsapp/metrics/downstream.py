"""Downstream impact: does a defaced image give the same brain, volumes and tissues?

Brain extraction (deepbet) and the 3-class segmentation (N4 + Atropos,
:func:`bidsapp.anatomy.segmentation.segment_tissues`) are run again on the defaced image and
compared with the same steps on the original:

* ``bet_dice``: Dice overlap of the two brain masks.
* ``tiv_change_pct``: change of the total intracranial volume, the volume of the brain mask
  (deepbet's mask holds the parenchyma and the CSF around it).
* ``brain_volume_change_pct``: change of the parenchyma volume, GM + WM.
* ``gm_change_pct``, ``wm_change_pct``, ``csf_change_pct``: change of each tissue volume.

Tissue volumes are sums of the posterior probabilities times the voxel volume (partial volume
kept). Changes are ``100 * (defaced - original) / original``. The segmentation names its classes
by intensity as in a T1w; on a T2w, FLAIR or PDw the classes are renamed after the template
tissue maps the IQMs register (:func:`bidsapp.anatomy.segmentation.match_to_template`), given
as ``template``, so that ``csf_change_pct`` is CSF's on every contrast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import nibabel as nib
import numpy as np

KEYS = ("bet_dice", "tiv_change_pct", "brain_volume_change_pct", "gm_change_pct",
        "wm_change_pct", "csf_change_pct")


class TissuesLike(Protocol):
    probs: dict[str, np.ndarray]


@dataclass(frozen=True)
class DefacedAnatomy:
    """The brain mask and tissues computed on a defaced image (the IQMs recomputed on it reuse
    them); ``tissues`` is None when the mask is too small to segment or segmentation is off."""

    brain_mask: np.ndarray
    tissues: TissuesLike | None


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks (NaN when both are empty)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int(np.count_nonzero(a & b)) / total if total else float("nan")


def volumes_ml(brain_mask: np.ndarray, tissues: TissuesLike | None, zooms) -> dict[str, float]:
    """TIV (mask volume), GM, WM, CSF and brain (GM + WM) volumes in ml."""
    voxel_ml = float(np.prod([float(z) for z in zooms[:3]])) / 1000.0
    out = {"tiv": float(np.count_nonzero(brain_mask)) * voxel_ml}
    for name in ("csf", "gm", "wm"):
        out[name] = (float(np.sum(tissues.probs[name], dtype=np.float64)) * voxel_ml
                     if tissues is not None else float("nan"))
    out["brain_volume"] = out["gm"] + out["wm"]
    return out


def _change(before: float, after: float) -> float:
    if not np.isfinite(before) or not np.isfinite(after) or before == 0:
        return float("nan")
    return 100.0 * (after - before) / before


def compare(original_mask: np.ndarray, original_volumes: dict[str, float],
            defaced_mask: np.ndarray, defaced_volumes: dict[str, float]) -> dict[str, float]:
    """The downstream record from masks and volumes of the original and the defaced image."""
    out = {"bet_dice": dice(original_mask, defaced_mask)}
    for key in ("tiv", "brain_volume", "gm", "wm", "csf"):
        out[f"{key}_change_pct"] = _change(original_volumes[key], defaced_volumes[key])
    return out


def empty() -> dict[str, float]:
    """The downstream keys, all NaN (metric not computed)."""
    return {key: float("nan") for key in KEYS}


def default_segmenter(image: nib.Nifti1Image, mask: np.ndarray, *, threads: int = 1,
                      seed: int = 42) -> TissuesLike:
    """The project's N4 + Atropos 3-class segmentation."""
    from bidsapp.anatomy.segmentation import segment_tissues

    return segment_tissues(image, mask, threads=threads, seed=seed)


def downstream_metrics(
    original_mask: np.ndarray, original_volumes: dict[str, float],
    defaced: nib.Nifti1Image, *, threads: int = 1, seed: int = 42,
    brain_masker: Callable[..., np.ndarray] | None = None,
    segmenter: Callable[..., TissuesLike] | None = default_segmenter,
    template: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, float], DefacedAnatomy]:
    """Brain extraction and segmentation again on ``defaced``, compared with the original's.

    ``brain_masker`` defaults to deepbet; ``segmenter=None`` skips the tissue volumes (NaN).
    ``template``: CSF/GM/WM maps on the defaced image's grid that name the classes (the
    original's, as registered for its IQMs); without it the T1w intensity order names them.
    Returns the downstream keys and the defaced image's brain mask and tissues.
    """
    if brain_masker is None:
        from bidsapp.anatomy.brainmask import deepbet_brain_mask as brain_masker
    zooms = defaced.header.get_zooms()[:3]
    mask = np.asarray(brain_masker(defaced, threads=threads), dtype=bool)
    tissues = None
    if segmenter is not None and np.count_nonzero(mask) >= 100:
        tissues = segmenter(defaced, mask, threads=threads, seed=seed)
        if template is not None:
            from bidsapp.anatomy.segmentation import match_to_template

            tissues = match_to_template(tissues, template)
    record = compare(original_mask, original_volumes, mask, volumes_ml(mask, tissues, zooms))
    return record, DefacedAnatomy(mask, tissues)
