"""Rigid registration between two images of one session, to carry a T1w's masks to a T2w/FLAIR."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

#: How far (mm) a carried-over mask is extended past the source's field of view by repeating its
#: edge, so that a target image reaching further down (to the nose tip, the chin) is covered.
EDGE_EXTENSION_MM = 60.0


def _ants():
    import ants

    return ants


def _to_ants(data: np.ndarray, affine: np.ndarray):
    ants = _ants()
    return ants.from_nibabel_nifti(nib.Nifti1Image(data.astype(np.float32), affine))


#: Registration runs on copies resampled to this spacing (mm): a rigid fit needs no more detail.
REGISTRATION_SPACING_MM = 3.0


def rigid_register(fixed_path: Path, moving_path: Path, out_prefix: Path, *, seed: int = 42,
                   threads: int = 1) -> Path:
    """Rigidly register ``moving`` onto ``fixed`` (Mattes mutual information); return the transform.

    Both images are resampled to :data:`REGISTRATION_SPACING_MM` first (the transform is in world
    coordinates, so it applies to the full-resolution images); a fixed seed makes the sampling
    repeatable.
    """
    ants = _ants()
    ants.config.set_ants_deterministic(True, seed)  # passes --random-seed to antsRegistration
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(max(1, threads))
    spacing = (REGISTRATION_SPACING_MM,) * 3
    fixed = ants.resample_image(ants.image_read(str(fixed_path)), spacing, False, 0)
    moving = ants.resample_image(ants.image_read(str(moving_path)), spacing, False, 0)
    result = ants.registration(
        fixed=fixed, moving=moving, type_of_transform="Rigid", aff_metric="mattes",
        aff_iterations=(500, 250, 100), aff_shrink_factors=(4, 2, 1),
        aff_smoothing_sigmas=(2, 1, 0), aff_random_sampling_rate=0.5,
        outprefix=str(out_prefix),
    )
    return Path(result["fwdtransforms"][0])


def carry_mask(mask: np.ndarray, source_affine: np.ndarray, target: nib.Nifti1Image,
               transform: Path, *, extend_mm: float = EDGE_EXTENSION_MM) -> np.ndarray:
    """Resample a boolean mask from the source grid onto ``target``'s grid through ``transform``.

    The mask is first extended past the source's field of view by edge replication
    (``extend_mm``), so target voxels outside the source's field of view take the value of the
    nearest source edge instead of "not masked".
    """
    ants = _ants()
    zooms = np.sqrt((source_affine[:3, :3] ** 2).sum(axis=0))
    pad = [int(np.ceil(extend_mm / z)) for z in zooms]
    padded = np.pad(mask.astype(np.uint8), [(p, p) for p in pad], mode="edge")
    shifted = source_affine.copy()
    shifted[:3, 3] = source_affine[:3, :3] @ (-np.array(pad, dtype=float)) + source_affine[:3, 3]
    moving = _to_ants(padded, shifted)
    fixed = _to_ants(np.zeros(target.shape[:3], np.float32), target.affine)
    warped = ants.apply_transforms(fixed=fixed, moving=moving, transformlist=[str(transform)],
                                   interpolator="linear")
    return warped.numpy() >= 0.5
