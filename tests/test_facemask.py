"""facemask: pydeface's face mask carried by a deterministic antspyx registration."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from bidsapp.anatomy.registration import block_downsample, register_template
from bidsapp.defacers import facemask as fm
from bidsapp.defacers.base import DefaceRequest
from faces import brain_mask, face_evidence


@pytest.fixture(scope="module")
def defacer():
    found = fm.FaceMask().availability()
    if not found.available:
        pytest.skip(found.reason)
    return fm.FaceMask()


def _run(defacer, path, tmp_path_factory):
    image = nib.load(path)
    request = DefaceRequest(
        image=image, image_path=path, work_dir=tmp_path_factory.mktemp("facemask"), threads=2
    )
    return image, defacer.deface(request)


def _check(image, output, brain):
    original = np.asanyarray(image.dataobj)
    data = np.asarray(output.data)
    assert data.shape == original.shape and data.dtype == original.dtype
    changed = data != original
    assert changed.any() and np.all(data[changed] == 0)
    assert not (changed & brain).any(), "a brain voxel was removed"
    nose, kept = face_evidence(original, data, brain, image.affine, image.header.get_zooms()[:3])
    assert nose > 0.9, f"only {nose:.0%} of the nose tip removed"
    assert kept < 0.4, f"{kept:.0%} of the face box kept"


def test_block_downsample_keeps_the_world():
    """Block means sit at the centres of their blocks; thick slices keep their spacing."""
    affine = np.diag([1.0, 1.0, 5.0, 1.0])
    affine[:3, 3] = (-10, -20, -30)
    data = np.arange(8 * 8 * 3, dtype=np.float32).reshape(8, 8, 3)
    small, small_affine = block_downsample(data, affine, 4.0)
    assert small.shape == (2, 2, 3)
    assert np.isclose(small[0, 0, 0], data[:4, :4, 0].mean())
    centre = nib.affines.apply_affine(small_affine, (0, 0, 0))
    assert np.allclose(centre, nib.affines.apply_affine(affine, (1.5, 1.5, 0)))


def test_registration_is_deterministic_and_sane(ds_faces):
    """Same answer twice in one process; the template brain centre lands on the image's."""
    from bidsapp.anatomy.registration import PYDEFACE_BRAIN_CENTROID

    pytest.importorskip("ants")
    image = nib.load(ds_faces / "sub-xa30" / "anat" / "sub-xa30_run-2_T1w.nii.gz")
    first = register_template(image, seed=7)
    second = register_template(image, seed=7)
    assert np.array_equal(first.image_to_template, second.image_to_template)
    # gross failures only: the field of view's centre (head and neck) maps within 7 cm of the
    # template's brain centre
    centre = nib.affines.apply_affine(image.affine, (np.asarray(image.shape) - 1) / 2)
    mapped = first.image_points_to_template(centre[None])[0]
    assert np.linalg.norm(mapped - np.asarray(PYDEFACE_BRAIN_CENTROID)) < 70
    scale = abs(np.linalg.det(first.image_to_template[:3, :3]))
    assert 0.6 < scale < 1.6


def test_facemask_xa30(defacer, ds_faces, tmp_path_factory):
    path = ds_faces / "sub-xa30" / "anat" / "sub-xa30_run-2_T1w.nii.gz"
    image, output = _run(defacer, path, tmp_path_factory)
    _check(image, output, brain_mask(image))
    assert output.parameters["removed_voxels"] > 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "relpath",
    [
        "sub-hfp/anat/sub-hfp_acq-fl2d_T1w.nii.gz",  # prone, thick sagittal slices
        "sub-hfs/anat/sub-hfs_acq-fl2d_T1w.nii.gz",  # supine, thick sagittal slices
        "sub-uber/anat/sub-uber_acq-se_T1w.nii.gz",  # 6 mm sagittal slices
        "sub-ixi012/anat/sub-ixi012_T1w.nii.gz",  # PSR, 2 mm
        "sub-adi/anat/sub-adi_acq-memprage_T1w.nii.gz",  # PIR
    ],
)
def test_facemask_orientations(defacer, ds_faces, tmp_path_factory, relpath):
    image, output = _run(defacer, ds_faces / relpath, tmp_path_factory)
    _check(image, output, brain_mask(image))


@pytest.mark.slow
def test_facemask_reproducible(defacer, ds_faces, tmp_path_factory):
    path = ds_faces / "sub-ixi015" / "anat" / "sub-ixi015_T1w.nii.gz"
    _, first = _run(defacer, path, tmp_path_factory)
    _, second = _run(defacer, path, tmp_path_factory)
    assert np.array_equal(first.data, second.data)
