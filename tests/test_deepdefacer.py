"""deepdefacer runner: the model run on real heads, in the orientation it was trained on."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from bidsapp.defacers import deepdefacer as dd
from bidsapp.defacers.base import DefaceRequest

#: At most this share of the brain (deepbet mask) may be removed; the model fed the stored voxel
#: order of a PSR head removes 4-8 % of it.
MAX_BRAIN_REMOVED = 0.005


@pytest.fixture(scope="module")
def defacer():
    found = dd.DeepDefacer().availability()
    if not found.available:
        pytest.skip(found.reason)
    return dd.DeepDefacer()


def _deface(defacer, path, tmp_path_factory):
    image = nib.load(path)
    request = DefaceRequest(image=image, image_path=path, threads=2,
                            work_dir=tmp_path_factory.mktemp("deepdefacer"))
    return image, defacer.deface(request)


def _brain(image):
    from bidsapp.anatomy.brainmask import deepbet_brain_mask

    return deepbet_brain_mask(image, threads=2)


@pytest.fixture(scope="module")
def template_run(defacer, pydeface_template, tmp_path_factory):
    image, output = _deface(defacer, pydeface_template, tmp_path_factory)
    return image, output, _brain(image)


@pytest.fixture(scope="module")
def psr_run(defacer, ds_faces, tmp_path_factory):
    path = ds_faces / "sub-ixi012" / "anat" / "sub-ixi012_T1w.nii.gz"
    image, output = _deface(defacer, path, tmp_path_factory)
    return image, output, _brain(image)


def _check_removal(image, output, brain):
    """Same grid and dtype, only zeroed voxels changed, removal in front of and below the brain,
    almost no brain removed."""
    original = np.asanyarray(image.dataobj)
    data = output.data
    assert data.shape == original.shape and data.dtype == original.dtype
    changed = data != original
    assert np.all(data[changed] == 0)
    removed = (data == 0) & (original != 0)
    assert 0.03 < removed.mean() < 0.3, f"removed {removed.mean():.1%} of the voxels"

    world = nib.affines.apply_affine(image.affine, np.argwhere(removed))
    centre = nib.affines.apply_affine(image.affine, np.argwhere(brain)).mean(axis=0)
    assert np.mean(world[:, 1] > centre[1]) > 0.9, "removed voxels are not anterior"
    assert np.mean(world[:, 2] < centre[2]) > 0.9, "removed voxels are not inferior"
    assert world[:, 1].mean() - centre[1] > 50 and world[:, 2].mean() - centre[2] < -40
    assert (removed & brain).sum() <= MAX_BRAIN_REMOVED * brain.sum()


def test_availability():
    found = dd.DeepDefacer().availability()
    if dd.model_file() is None:
        assert not found.available and "pip install --no-deps deepdefacer" in found.reason
    else:
        assert found.available and found.version


def test_orientation_round_trip():
    """The mask is predicted in RAS voxel order and lands back on the stored PSR grid."""

    class AnteriorHalf:  # stands in for the model: keep the posterior half of its input
        def predict(self, x, **_):
            keep = np.zeros_like(x)
            keep[..., : x.shape[3] // 2, :] = 1
            return keep

    shape = (40, 30, 20)  # P, S, R voxel axes
    affine = np.array([[0, 0, 2, -20], [-2, 0, 0, 40], [0, 2, 0, -30], [0, 0, 0, 1.0]])
    image = nib.Nifti1Image(np.random.default_rng(0).random(shape, dtype=np.float32), affine)
    assert nib.aff2axcodes(affine) == ("P", "S", "R")

    removed = dd.removed_voxels(image, AnteriorHalf())
    assert removed.shape == shape
    # voxel axis 0 runs towards posterior: its first half is the anterior half of the head
    assert removed[:19].all() and not removed[21:].any()
    native = dd.removed_voxels(image, AnteriorHalf(), axcodes=None)
    assert native[:, 16:].all() and not native[:, :14].any()  # the upper half: wrong block


@pytest.mark.slow
def test_template_face_removed_brain_kept(template_run):
    image, output, brain = template_run
    _check_removal(image, output, brain)
    assert output.parameters["model_orientation"] == "RAS"
    assert output.parameters["input_orientation"] == "RAS" and not output.notes


@pytest.mark.slow
def test_psr_head_reoriented(psr_run):
    image, output, brain = psr_run
    _check_removal(image, output, brain)
    assert output.parameters["input_orientation"] == "PSR" and output.notes


@pytest.mark.slow
def test_deterministic(defacer, psr_run, ds_faces, tmp_path_factory):
    _, output, _ = psr_run
    _, again = _deface(defacer, ds_faces / "sub-ixi012" / "anat" / "sub-ixi012_T1w.nii.gz",
                       tmp_path_factory)
    np.testing.assert_array_equal(again.data, output.data)
