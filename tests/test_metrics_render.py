"""Skin renders and the face detector: deterministic, face forward whatever the voxel order,
calibrated on ds-faces (faces found) and ds-defaced (none), and the already-defaced check."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from nibabel import orientations
from test_metrics_face import reference_of

from bidsapp.metrics import OriginalReference, defacing_metrics, input_face_check
from bidsapp.metrics import render as R


@pytest.fixture(scope="module")
def ixi012(ds_faces):
    return reference_of(ds_faces / "sub-ixi012" / "anat" / "sub-ixi012_T1w.nii.gz")


def test_renders_are_grey_images_and_deterministic(ixi012):
    renders = ixi012.skin.renders
    assert set(renders) == set(R.VIEWS)
    for view, image in renders.items():
        assert image.shape == (R.SIZE, R.SIZE) and image.dtype == np.uint8
        again = R.render(R.skin_mesh(ixi012.skin.head, ixi012.grid.affine), ixi012.cameras[view])
        assert np.array_equal(again, image), view
    # the head fills the frame, on a black background
    assert (renders["front"] > 0).mean() > 0.3
    assert renders["front"][0, 0] == 0


def test_the_face_is_found_on_the_front_render(ixi012):
    found = ixi012.skin.detections["front"]
    assert found.found and found.score >= R.SCORE_THRESHOLD
    x, _, width, _ = found.box
    assert width >= R.MIN_SIZE and 0 <= x and x + width <= R.SIZE
    assert input_face_check(ixi012)["input_already_defaced"] is False


def test_nothing_is_found_on_a_blank_image():
    found = R.detect_face(np.zeros((R.SIZE, R.SIZE), dtype=np.uint8))
    assert not found.found and np.isnan(found.score) and found.box is None


def test_renders_do_not_depend_on_the_voxel_order(ixi012):
    ornt = np.array([[1, -1], [2, 1], [0, -1]])
    image = ixi012.image
    affine = image.affine @ orientations.inv_ornt_aff(ornt, image.shape[:3])
    data = orientations.apply_orientation(np.asanyarray(image.dataobj), ornt)
    brain = orientations.apply_orientation(ixi012.brain_mask, ornt)
    other = OriginalReference.build(nib.Nifti1Image(data, affine), brain)
    for view in R.VIEWS:
        differ = other.skin.renders[view] != ixi012.skin.renders[view]
        assert differ.mean() < 0.01, view


def test_a_sheared_face_is_not_found(ixi012):
    from quickshear import quickshear

    image = ixi012.image
    ones = nib.Nifti1Image(np.ones(image.shape[:3], dtype=np.uint8), image.affine)
    mask = nib.Nifti1Image(ixi012.brain_mask.astype(np.uint8), image.affine)
    kept = np.asanyarray(quickshear(ones, mask, buff=10).dataobj).astype(bool)
    defaced = nib.Nifti1Image(np.where(kept, np.asanyarray(image.dataobj), 0), image.affine)
    record = defacing_metrics(ixi012, defaced, downstream=False)
    assert record["face_detected"] is False
    assert record["face_detected_front"] is False
    same = defacing_metrics(ixi012, image, downstream=False)
    assert same["face_detected"] is True
    assert same["face_score_front"] == pytest.approx(ixi012.skin.detections["front"].score)


def test_records_have_the_same_keys_whatever_is_skipped(ixi012):
    full = defacing_metrics(ixi012, ixi012.image)  # bit-identical: downstream not rerun
    bare = defacing_metrics(ixi012, ixi012.image, downstream=False, render=False)
    assert list(full) == list(bare)
    assert bare["face_detected"] is None and np.isnan(bare["face_score_front"])
    assert np.isnan(bare["bet_dice"]) and full["bet_dice"] == 1.0


@pytest.mark.slow
def test_detector_calibration_and_already_defaced_inputs(ds_faces, ds_defaced):
    """Faces are found on every ds-faces original whose field of view holds the whole face, none
    on ds-defaced; every ds-defaced input is flagged as already defaced, no ds-faces one."""
    outcomes = {}
    for dataset in (ds_faces, ds_defaced):
        for path in sorted(dataset.rglob("anat/*.nii.gz")):
            reference = reference_of(path)
            outcomes[path.name] = (dataset.name, reference.lower_face_in_fov,
                                   input_face_check(reference))
    assert len(outcomes) == 13
    false_negatives = [name for name, (ds, whole, check) in outcomes.items()
                       if ds == "ds-faces" and whole and not check["input_face_detected"]]
    false_positives = [name for name, (ds, _, check) in outcomes.items()
                       if ds == "ds-defaced" and check["input_face_detected"]]
    assert false_negatives == [] and false_positives == []
    whole_faces = [name for name, (ds, whole, _) in outcomes.items() if ds == "ds-faces" and whole]
    assert len(whole_faces) >= 8  # all but the slabs that stop at the nose (T2w, FLAIR)
    flagged = {name for name, (_, _, check) in outcomes.items()
               if check["input_already_defaced"]}
    assert flagged == {name for name, (ds, _, _) in outcomes.items() if ds == "ds-defaced"}
    # the raw detector does find the refaced (painted) face; the verdict rejects it
    refaced = outcomes["sub-ds001946r_T1w.nii.gz"][2]
    assert refaced["input_painted_face_pct"] >= 10
    assert refaced["input_face_check"].startswith("the face is a painted shell")
