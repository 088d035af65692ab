"""Bringing an external tool's output onto the input's voxel grid and data type.

Every metric compares like with like: a tool that writes another voxel order (fslreorient2std,
FSL radiological) is permuted back exactly, any other grid is resampled.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform
from scipy import ndimage

from bidsapp.io import _cast

#: Voxel-to-world matrices closer than this (mm) are the same grid.
GRID_ATOL = 1e-3


def collect_on_input_grid(output_path: Path | str, reference_img: nib.Nifti1Image) -> np.ndarray:
    """A tool's output image as an array on ``reference_img``'s grid and in its data type.

    NaN and infinities become 0 (spm_deface writes NaN outside the head). An output stored in
    another voxel order (fslreorient2std, FSL radiological) is permuted and flipped back
    exactly; any other change of grid is undone by nearest-neighbour resampling, with 0 outside
    the output's field of view. Integer types are rounded and clipped to their range.
    """
    return collect_with_notes(Path(output_path), reference_img)[0]


def collect_with_notes(path: Path, reference: nib.Nifti1Image) -> tuple[np.ndarray, list[str]]:
    """:func:`collect_on_input_grid` plus notes on what had to be done."""
    if not path.is_file():
        raise RuntimeError(f"the tool did not write {path.name}")
    image = nib.load(str(path))
    data = np.asanyarray(image.dataobj)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise RuntimeError(f"{path.name} has shape {image.shape}; expected one 3D volume")
    notes = []
    if data.dtype.kind == "f":
        bad = ~np.isfinite(data)
        if bad.any():
            data = np.where(bad, 0, data)
            notes.append(f"{path.name}: {int(bad.sum())} NaN/infinite voxels set to 0")
    data, note = _onto_grid(data, image.affine, reference)
    if note:
        notes.append(f"{path.name}: {note}")
    return _cast(np.asarray(data), _value_dtype(reference)), notes


def _value_dtype(image: nib.Nifti1Image) -> np.dtype:
    """The dtype ``np.asanyarray(image.dataobj)`` returns (the stored one unless scaled)."""
    corner = tuple(slice(0, 1) for _ in image.shape)
    return np.asanyarray(image.dataobj[corner]).dtype


def _onto_grid(data: np.ndarray, affine: np.ndarray,
               reference: nib.Nifti1Image) -> tuple[np.ndarray, str | None]:
    shape = reference.shape[:3]
    if data.shape == shape and np.allclose(affine, reference.affine, atol=GRID_ATOL):
        return data, None
    # Same voxel centres in another storage order: undo the permutation and flips exactly.
    transform = ornt_transform(io_orientation(affine), io_orientation(reference.affine))
    permuted = apply_orientation(data, transform)
    permuted_affine = affine @ inv_ornt_aff(transform, data.shape)
    if permuted.shape == shape and np.allclose(permuted_affine, reference.affine, atol=GRID_ATOL):
        return permuted, "stored in another voxel order; permuted back to the input's exactly"
    vox2vox = np.linalg.inv(affine) @ reference.affine
    resampled = ndimage.affine_transform(
        np.asarray(data, dtype=np.float64), vox2vox[:3, :3], offset=vox2vox[:3, 3],
        output_shape=shape, order=0, mode="constant", cval=0.0,
    )
    return resampled, (f"on another grid (shape {data.shape}); resampled onto the input's "
                       "with nearest neighbour")
