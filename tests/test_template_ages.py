"""Template defacers (facecut, facemask) from newborn to adult (issue 18), and facecut's guard
options (issue 15): real heads only.

The infant is ds-more's sub-infant (1 mm, deepbet brain about 463 ml); the child-sized head is
ds-faces' sub-xa30 with its voxels shrunk to 0.75 of their size (same voxels, brain about
660 ml); the coronal and sagittal infants with part of the face outside the field of view are
built from sub-infant in tmp. Brain masks of derived images are the original's deepbet mask
carried through the same crop and reorientation (the same voxels).
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from bidsapp.anatomy import headsize
from bidsapp.anatomy.brainmask import dilate_mm
from bidsapp.defacers import facecut as fc
from bidsapp.defacers.base import DefaceRequest
from faces import available_defacer, brain_mask, check_defaced


@pytest.fixture(scope="module")
def defacer():
    return available_defacer(fc.FaceCut)


@pytest.fixture(scope="module")
def infant(testdata):
    """sub-infant and its deepbet brain mask."""
    image = nib.load(testdata / "ds-more" / "sub-infant" / "anat" / "sub-infant_T1w.nii.gz")
    return image, brain_mask(image)


@pytest.fixture(scope="module")
def xa30(ds_faces):
    image = nib.load(ds_faces / "sub-xa30" / "anat" / "sub-xa30_run-2_T1w.nii.gz")
    return image, brain_mask(image)


def _deface(defacer, image, brain, work, **kwargs):
    request = DefaceRequest(image=image, image_path=work / "image.nii.gz", work_dir=work,
                            brain_mask=brain, **kwargs)
    return defacer.deface(request)


def _derived(image, brain, crop, axcodes):
    """``image`` and ``brain`` cropped by voxel slices (RAS input), then stored in ``axcodes``."""
    out = []
    for img in (image, nib.Nifti1Image(brain.astype(np.uint8), image.affine)):
        cropped = img.slicer[crop]
        ornt = nib.orientations.ornt_transform(
            nib.orientations.io_orientation(cropped.affine),
            nib.orientations.axcodes2ornt(axcodes))
        out.append(cropped.as_reoriented(ornt))
    derived, mask = out
    data = np.asanyarray(derived.dataobj)
    derived = nib.Nifti1Image(data, derived.affine)
    derived.set_data_dtype(image.get_data_dtype())
    return derived, np.asanyarray(mask.dataobj) > 0


@pytest.mark.slow
def test_head_size_from_brain(infant, xa30):
    """The infant's brain gives a scaled start; an adult's does not; a cut brain gives no size."""
    (image, brain), (adult, adult_brain) = infant, xa30
    size = headsize.head_size(brain, image.header.get_zooms())
    assert 400 < size.brain_ml < 550 and size.complete
    assert size.expected_scale == pytest.approx(headsize.TEMPLATE_BRAIN_ML / size.brain_ml)
    assert size.initial_scale == pytest.approx(size.expected_scale ** (1 / 3))
    assert headsize.size_problem(size) is None
    grown = headsize.head_size(adult_brain, adult.header.get_zooms())
    assert grown.complete and grown.initial_scale == 1.0 and grown.brain_ml > 1100
    centre = int(np.argwhere(brain)[:, 2].mean())
    half = headsize.head_size(brain[:, :, centre:], image.header.get_zooms())  # an axial slab
    assert not half.complete and half.expected_scale == 1.0 and half.initial_scale == 1.0


@pytest.mark.slow
def test_infant_registration_check(infant, tmp_path):
    """The infant's registration passes the check for its size and fails it for an adult's."""
    image, brain = infant
    reg, size = headsize.checked_registration(image, brain, seed=42, work_dir=tmp_path)
    assert reg.parameters["initial_scale"] == pytest.approx(size.initial_scale, abs=1e-4)
    assert not headsize.registration_problems(reg, brain, image.affine, size)
    adult = headsize.HeadSize(size.brain_ml, True, 1.0, 1.0)
    problems = headsize.registration_problems(reg, brain, image.affine, adult)
    assert len(problems) == 1 and "implausible volume scale" in problems[0]


@pytest.mark.slow
def test_facecut_infant(defacer, infant, tmp_path):
    """Eyes, nose, mouth and chin of the infant removed, no voxel within 5 mm of the brain
    altered, identical voxels on a second run."""
    image, brain = infant
    output = _deface(defacer, image, brain, tmp_path)
    check_defaced(image, output, brain, fc.GUARD_MM, max_face_kept=0.05)
    params = output.parameters
    assert params["initial_scale"] > 1.3 and params["brain_in_view"] is True
    again = _deface(defacer, image, brain, tmp_path)
    assert np.array_equal(np.asarray(again.data), np.asarray(output.data))


@pytest.mark.slow
@pytest.mark.parametrize(
    "crop, axcodes, nose",
    [
        ((slice(None), slice(None), slice(30, None)), ("L", "S", "A"), True),  # coronal, no chin
        ((slice(None), slice(None, 128), slice(None)), ("P", "I", "R"), False),  # sagittal, no nose
    ],
    ids=["coronal-no-chin", "sagittal-no-nose"],
)
def test_facecut_infant_partial_face(defacer, infant, tmp_path, crop, axcodes, nose):
    image, brain = infant
    derived, mask = _derived(image, brain, crop, axcodes)
    assert nib.aff2axcodes(derived.affine) == axcodes
    assert not headsize.brain_is_cut(mask)
    output = _deface(defacer, derived, mask, tmp_path)
    check_defaced(derived, output, mask, fc.GUARD_MM, max_face_kept=0.05, nose_in_view=nose)


@pytest.mark.slow
def test_facecut_child_sized_head(defacer, xa30, tmp_path):
    """An adult head shrunk to a toddler's size (voxels 0.75 of their size) is defaced as well."""
    image, brain = xa30
    small = nib.Nifti1Image(np.asanyarray(image.dataobj), np.diag([0.75] * 3 + [1]) @ image.affine)
    small.set_data_dtype(image.get_data_dtype())
    output = _deface(defacer, small, brain, tmp_path)
    check_defaced(small, output, brain, fc.GUARD_MM)
    assert 500 < output.parameters["brain_ml"] < 800 and output.parameters["initial_scale"] > 1.2


@pytest.mark.slow
def test_facemask_infant(infant, tmp_path):
    """facemask on the infant, with the same scaled start and check: nose and face box gone
    (at scale 1 it kept 58 % of the face box: a slit at the mouth)."""
    from bidsapp.defacers.facemask import FaceMask
    from faces import face_evidence

    image, brain = infant
    output = _deface(available_defacer(FaceMask), image, brain, tmp_path)
    original, data = np.asanyarray(image.dataobj), np.asarray(output.data)
    nose, kept = face_evidence(original, data, brain, image.affine, image.header.get_zooms())
    assert nose > 0.99 and kept < 0.1, (nose, kept)
    assert output.parameters["initial_scale"] > 1.3 and output.parameters["brain_ml"] < 550


@pytest.mark.slow
def test_too_small_head_is_a_clear_failure(defacer, infant, tmp_path):
    """A head below the supported size fails with the reason in the record, nothing written."""
    from bidsapp.defacers.runner import DEFACED, make_spec, run_measured

    image, brain = infant
    tiny_affine = np.diag([0.5] * 3 + [1]) @ image.affine  # a 58 ml brain
    path, mask_path = tmp_path / "tiny.nii.gz", tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj), tiny_affine), path)
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), tiny_affine), mask_path)
    spec = make_spec(defacer="facecut", image=path, out_dir=tmp_path / "out",
                     brain_mask=mask_path, guard=True, guard_margin_mm=5.0, seed=42, threads=1)
    record = run_measured(spec)
    assert record["status"] == "failed"
    assert "smaller than the 300 ml" in record["error"] and "ml" in record["error"]
    assert not (tmp_path / "out" / DEFACED).exists()


@pytest.mark.slow
@pytest.mark.parametrize("guard, margin", [(True, 10.0), (False, 5.0)], ids=["10mm", "off"])
def test_facecut_follows_guard_options(defacer, ds_faces, xa30, tmp_path, guard, margin):
    """facecut's own guard is the run's: --guard-margin-mm 10 keeps 10 mm, --brain-guard off
    keeps nothing (the runner passes the margin, None when off)."""
    from bidsapp.defacers.runner import ALTERED, RECORD, make_spec, run_measured

    image, brain = xa30
    mask_path = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), image.affine), mask_path)
    spec = make_spec(defacer="facecut", image=ds_faces / "sub-xa30/anat/sub-xa30_run-2_T1w.nii.gz",
                     out_dir=tmp_path / "out", brain_mask=mask_path, guard=guard,
                     guard_margin_mm=margin, seed=42, threads=1)
    record = run_measured(spec)
    assert record["status"] == "ok", record.get("error")
    assert json.loads((tmp_path / "out" / RECORD).read_text())["status"] == "ok"
    altered = np.asanyarray(nib.load(tmp_path / "out" / ALTERED).dataobj) > 0
    params = record["parameters"]
    near = altered & dilate_mm(brain, image.header.get_zooms(), margin)
    if guard:
        assert params["guard_mm"] == margin and params["min_distance_mm"] >= margin
        assert not near.any() and record["guard"]["restored_voxels"] == 0
    else:
        assert params["guard_mm"] == "off" and params["guarded_voxels"] == 0
        assert near.any() and params["brain_voxels_removed"] > 0, "no guard: the cut takes brain"
        assert "brain guard off" in record["notes"][0]


def test_help_says_facecut_follows_the_guard():
    from bidsapp.cli.parser import build_parser

    text = " ".join(build_parser().format_help().split())
    assert "facecut's own guard follows this" in text and "facecut's own included" in text
