"""Skin renders and dlib's CNN detector inside the metrics: deterministic, the same face
whatever the voxel order, faces on ds-faces, none on ds-defaced, and the already-defaced check."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from nibabel import orientations
from test_metrics_face import reference_of

from bidsapp.faces.detect import detect
from bidsapp.faces.render import render
from bidsapp.metrics.defacing import defacing_metrics, input_face_check
from bidsapp.metrics.reference import PROBE_VIEWS, OriginalReference


@pytest.fixture(scope="module")
def ixi012(ds_faces):
    return reference_of(ds_faces / "sub-ixi012" / "anat" / "sub-ixi012_T1w.nii.gz")


def test_renders_are_grey_images_and_deterministic(ixi012):
    faces = ixi012.skin.faces
    assert set(faces.renders) == set(faces.cameras) and len(faces.cameras) == 9
    for view, rendered in faces.renders.items():
        size = faces.cameras[view].size
        assert rendered.image.shape == (size, size) and rendered.image.dtype == np.uint8
        again = render(ixi012.skin.points, faces.cameras[view], ixi012.grid.spacing)
        assert np.array_equal(again.image, rendered.image), view
    front = faces.renders["y+0p+0"].image
    assert (front > 0).mean() > 0.3 and front[0, 0] == 0  # head on a black background


def test_the_face_is_found_on_the_original(ixi012):
    best = ixi012.skin.faces.best
    assert best is not None and best.score > 0.8
    assert set(ixi012.cameras) <= set(ixi012.skin.faces.cameras)
    assert len(ixi012.cameras) == PROBE_VIEWS
    check = input_face_check(ixi012)
    assert check["input_already_defaced"] is False
    assert check["input_face_regions_from"] == "landmarks"


def test_nothing_is_found_on_a_blank_image(ixi012):
    camera = ixi012.skin.faces.cameras["y+0p+0"]
    assert detect(render(np.zeros((0, 3)), camera, 1.5)) is None


def test_detection_does_not_depend_on_the_voxel_order(ixi012):
    ornt = np.array([[1, -1], [2, 1], [0, -1]])
    image = ixi012.image
    affine = image.affine @ orientations.inv_ornt_aff(ornt, image.shape[:3])
    data = orientations.apply_orientation(np.asanyarray(image.dataobj), ornt)
    brain = orientations.apply_orientation(ixi012.brain_mask, ornt)
    other = OriginalReference.build(nib.Nifti1Image(data, affine), brain)
    ours, theirs = ixi012.skin.faces.faces, other.skin.faces.faces
    assert [v for v in ours if ours[v]] == [v for v in theirs if theirs[v]]
    assert other.skin.faces.best.score == pytest.approx(ixi012.skin.faces.best.score, abs=0.05)


def test_a_sheared_face_is_not_found(ixi012):
    from quickshear import quickshear

    image = ixi012.image
    ones = nib.Nifti1Image(np.ones(image.shape[:3], dtype=np.uint8), image.affine)
    mask = nib.Nifti1Image(ixi012.brain_mask.astype(np.uint8), image.affine)
    kept = np.asanyarray(quickshear(ones, mask, buff=10).dataobj).astype(bool)
    defaced = nib.Nifti1Image(np.where(kept, np.asanyarray(image.dataobj), 0), image.affine)
    record = defacing_metrics(ixi012, defaced, downstream=False)
    assert record["face_detected"] is False and np.isnan(record["face_score"])
    assert record["face_views"] == PROBE_VIEWS and record["face_box"] is None
    same = defacing_metrics(ixi012, image, downstream=False)
    assert same["face_detected"] is True
    best = max(f.score for v, f in ixi012.skin.faces.faces.items() if v in ixi012.cameras)
    assert same["face_score"] == pytest.approx(best)


def test_records_have_the_same_keys_whatever_is_skipped(ixi012):
    full = defacing_metrics(ixi012, ixi012.image)  # bit-identical: downstream not rerun
    bare = defacing_metrics(ixi012, ixi012.image, downstream=False, render=False)
    assert set(bare) <= set(full)
    assert bare["face_detected"] is None and np.isnan(bare["face_score"])
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
