"""Brain mask of an image with deepbet (Fisch et al. 2024), on the image's own grid."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from scipy import ndimage


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


def dilate_mm(mask: np.ndarray, zooms, margin_mm: float) -> np.ndarray:
    """Dilate a boolean mask by ``margin_mm`` millimetres (exact Euclidean distance)."""
    if margin_mm <= 0 or not mask.any():
        return mask.copy()
    outside = ~mask
    distance = ndimage.distance_transform_edt(outside, sampling=[float(z) for z in zooms[:3]])
    return distance <= margin_mm
