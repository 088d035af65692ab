"""Evidence that a face is gone, independent of any defacer's template (facecut, facemask)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from scipy import ndimage


def available_defacer(cls):
    """An instance of the defacer class ``cls``, or the test skipped with the reason it cannot run."""
    import pytest

    found = cls().availability()
    if not found.available:
        pytest.skip(found.reason)
    return cls()


def brain_mask(image: nib.Nifti1Image) -> np.ndarray:
    """deepbet's brain mask of ``image``, as the pipeline computes it."""
    from bidsapp.anatomy.brainmask import deepbet_brain_mask

    return deepbet_brain_mask(image, threads=2)


def face_evidence(original, defaced, brain, affine, zooms):
    """(share of the nose-tip voxels zeroed, share of the face box's head voxels kept).

    The nose tip is the most anterior head voxel (world RAS) within 15 mm of the brain's midline,
    below its centre; the face box is the head in front of the brain's frontal pole minus 25 mm,
    below its centre minus 15 mm, more than 10 mm from the brain.
    """
    head = ndimage.binary_opening(original > 0.15 * float(np.median(original[brain])))
    brain_w = nib.affines.apply_affine(affine, np.argwhere(brain))
    cx, cz = brain_w[:, 0].mean(), brain_w[:, 2].mean()
    front, bottom = brain_w[:, 1].max(), brain_w[:, 2].min()
    voxels = np.argwhere(head)
    world = nib.affines.apply_affine(affine, voxels)
    band = (np.abs(world[:, 0] - cx) < 15) & (world[:, 2] < cz) & (world[:, 2] > bottom - 60)
    tip = world[band][np.argmax(world[band][:, 1])]
    near = voxels[np.linalg.norm(world - tip, axis=1) < 8]
    dist = ndimage.distance_transform_edt(~brain, sampling=zooms)
    box = (world[:, 1] > front - 25) & (world[:, 2] < cz - 15) & (np.abs(world[:, 0] - cx) < 50)
    box &= dist[tuple(voxels.T)] > 10
    return (
        float((defaced[tuple(near.T)] == 0).mean()),
        float((defaced[tuple(voxels[box].T)] != 0).mean()),
    )


def check_defaced(image, output, brain, guard_mm, max_face_kept=0.25, nose_in_view=True):
    """facecut's promises on one output: zeros only, guard zone intact, nose tip and face gone.

    ``nose_in_view=False``: the field of view ends before the nose (its "tip" is then the crop's
    edge), so only the face box is checked.
    """
    from bidsapp.anatomy.brainmask import dilate_mm

    original = np.asanyarray(image.dataobj)
    data = np.asarray(output.data)
    assert data.shape == original.shape and data.dtype == original.dtype
    changed = data != original
    assert changed.any()
    assert np.all(data[changed] == 0)
    zooms = image.header.get_zooms()[:3]
    assert not (changed & dilate_mm(brain, zooms, guard_mm)).any(), "guard zone altered"
    params = output.parameters
    assert params["brain_voxels_removed"] == 0 and params["guard_mm"] == guard_mm
    min_dist = params["min_distance_mm"]
    assert min_dist == f"> {guard_mm + 20:g}" or min_dist >= guard_mm
    nose, kept = face_evidence(original, data, brain, image.affine, zooms)
    assert nose > 0.99 or not nose_in_view, f"only {nose:.0%} of the nose tip removed"
    assert kept < max_face_kept, f"{kept:.0%} of the face box kept"
