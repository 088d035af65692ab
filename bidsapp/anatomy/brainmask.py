"""Brain mask of an image with deepbet (Fisch et al. 2024), on the image's own grid."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from scipy import ndimage

from bidsapp.geometry import bounding_box, box_intersection


def deepbet_brain_mask(image: nib.Nifti1Image, *, threads: int = 1) -> np.ndarray:
    """Boolean brain mask of a 3D image, on the image's voxel grid.

    deepbet works in the closest canonical (RAS) orientation; its mask is brought back to the
    stored voxel order, so the result matches ``image.shape`` whatever the orientation.
    """
    import torch
    from deepbet import BrainExtraction

    torch.set_num_threads(max(1, threads))
    data = np.nan_to_num(np.asanyarray(image.dataobj, dtype=np.float32), posinf=0, neginf=0)
    clean = nib.Nifti1Image(data, image.affine)
    bet = BrainExtraction(no_gpu=True)
    _, mask_img, _ = bet.run(clean)
    mask = np.asanyarray(mask_img.dataobj).astype(bool)
    if mask.shape != image.shape[:3]:  # pragma: no cover - deepbet returns the input grid
        raise RuntimeError(f"deepbet returned shape {mask.shape} for an image of {image.shape}")
    return mask


def dilate_mm(mask: np.ndarray, zooms, margin_mm: float, *,
              within: np.ndarray | None = None) -> np.ndarray:
    """Dilate a boolean mask by ``margin_mm`` millimetres (exact Euclidean distance).

    The distance transform runs on the mask's bounding box grown by the margin only (every
    voxel within the margin, and every mask voxel near it, lies in it). ``within``: the only
    voxels the caller needs; the box is clipped to theirs grown by the margin, and the result is
    exact at those voxels (elsewhere it may be False).
    """
    mask = np.asarray(mask, dtype=bool)
    if margin_mm <= 0 or not mask.any():
        return mask.copy()
    sampling = [float(z) for z in zooms[:3]]
    pad = [int(np.ceil(margin_mm / z)) + 1 for z in sampling]
    box = bounding_box(mask, pad)
    out = np.zeros_like(mask)
    if within is not None:
        near = bounding_box(within, pad)
        if near is None:
            return out
        box = box_intersection(box, near)
    out[box] = ndimage.distance_transform_edt(~mask[box], sampling=sampling) <= margin_mm
    return out
