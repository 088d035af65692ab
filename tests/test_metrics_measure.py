"""The metrics step of one image (bidsapp.metrics.measure) on real results of real defacers."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from bidsapp.defacers.runner import make_spec, run_measured
from bidsapp.io import save_like
from bidsapp.metrics.measure import main, measure_image

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quickshear_result(ds_faces, tmp_path_factory):
    """quickshear run for real on the 2 mm head, with a real deepbet brain mask."""
    from bidsapp.anatomy.brainmask import deepbet_brain_mask

    root = tmp_path_factory.mktemp("measure")
    path = ds_faces / "sub-xa30" / "anat" / "sub-xa30_run-1_T1w.nii.gz"
    image = nib.load(path)
    brain = deepbet_brain_mask(image)
    save_like(image, brain.astype(np.uint8), root / "brain.nii.gz", dtype=np.uint8)
    record = run_measured(make_spec(defacer="quickshear", image=path, out_dir=root / "run",
                                    brain_mask=root / "brain.nii.gz", guard=False,
                                    guard_margin_mm=5, seed=1, threads=1))
    assert record["status"] == "ok", record
    return {"root": root, "image": path, "image_nii": image, "brain": brain}


def test_a_failing_family_is_recorded_and_the_others_computed(quickshear_result, tmp_path):
    """A brain mask of a few voxels (deepbet finding almost no brain) used to make the whole
    metrics step raise in the tissue segmentation, so no record got any metric."""
    image, brain = quickshear_result["image_nii"], quickshear_result["brain"]
    tiny = np.zeros(brain.shape, dtype=np.uint8)
    centre = tuple(int(np.mean(axis)) for axis in np.nonzero(brain))
    tiny[tuple(slice(c - 1, c + 2) for c in centre)] = 1  # 27 voxels
    save_like(image, tiny, tmp_path / "tiny.nii.gz", dtype=np.uint8)
    spec = {"image": str(quickshear_result["image"]), "brain_mask": str(tmp_path / "tiny.nii.gz"),
            "results": {"quickshear": str(quickshear_result["root"] / "run")},
            "out": str(tmp_path / "metrics.json")}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    assert main([str(tmp_path / "spec.json")]) == 0
    out = json.loads((tmp_path / "metrics.json").read_text())
    assert set(out["input"]["measurement_errors"]) == {"iqms"}
    assert out["input"]["input_face_check"]  # the face family of the input still ran
    entry = out["defacers"]["quickshear"]
    assert set(entry["measurement_errors"]) == {"downstream", "iqms"}, entry["measurement_errors"]
    assert all(entry["measurement_errors"].values())
    metrics = entry["metrics"]  # face and brain families computed without the downstream one
    assert metrics["changed_voxels"] > 1000 and metrics["brain_changed_voxels"] == 0
    assert "face_altered_pct" in metrics  # NaN here: the face is located from the brain
    assert metrics["bet_dice"] is None  # not computed: NaN, written as null


def test_measure_image_on_a_good_mask_has_no_error(quickshear_result, tmp_path):
    from bidsapp.metrics.reference import OriginalReference, defaced_skin
    from bidsapp.metrics.seen import load_seen, seen_path
    from bidsapp.reports.participant_figures import detection_builder, render_builder

    brain = quickshear_result["root"] / "brain.nii.gz"
    key = "sub-xa30_run-1_T1w"
    out = measure_image(quickshear_result["image"], brain,
                        {"quickshear": str(quickshear_result["root"] / "run")},
                        seen=(tmp_path / "seen", key))
    assert "measurement_errors" not in out["input"]
    entry = out["defacers"]["quickshear"]
    assert "measurement_errors" not in entry
    assert entry["metrics"]["bet_dice"] > 0.9 and entry["iqms"]["original_masks"]["delta"]
    assert out["input"]["iqms"]["cjv"] > 0 and "orientation_check" not in out["input"]

    # the head the metrics measured is kept for the report: the same mask, bit for bit
    kept_path = seen_path(tmp_path / "seen", key, "quickshear")
    assert kept_path.name == "sub-xa30_run-1_desc-quickshear_T1w_seen.npz"
    kept = load_seen(kept_path)
    defaced = nib.load(quickshear_result["root"] / "run" / "defaced.nii.gz")
    reference = OriginalReference.build(quickshear_result["image_nii"],
                                        quickshear_result["brain"], render=False)
    skin, _, _ = defaced_skin(reference, defaced, render=False)
    assert kept.head.dtype == bool and np.array_equal(kept.head, skin.head)
    assert np.allclose(kept.affine, reference.grid.affine)
    metrics = entry["metrics"]
    assert (kept.detection_view == metrics["face_view"]), (kept.detection_view, metrics)
    # a report drawn without it (a participant the workflow did not reach) builds the same head
    from bidsapp.metrics.render import skin_mesh
    from bidsapp.reports.plots import head_mesh

    rebuilt = head_mesh(defaced, brain)
    assert np.array_equal(rebuilt.vertices, skin_mesh(kept.head, kept.affine).vertices)
    # and the report draws its renders (and the detector's view) from it
    render_builder(None, None, None, kept_path)(tmp_path / "render.png")
    assert (tmp_path / "render.png").stat().st_size > 10_000
    if kept.detection_view is not None:
        detection_builder(None, None, kept.detection_view, metrics["face_box"], kept_path)(
            tmp_path / "detection.png")
        assert (tmp_path / "detection.png").stat().st_size > 1_000


def test_orientation_check_on_a_real_head(quickshear_result):
    """The head is stored in RAS voxel order: read in those axes its face and neck are in front
    of and below the brain; read with the axes of a sagittal (PSR-like) storage they are not."""
    from bidsapp.metrics.face import head_mask, head_threshold
    from bidsapp.metrics.orientation import orientation_check

    image, brain = quickshear_result["image_nii"], quickshear_result["brain"]
    data = np.asanyarray(image.dataobj).astype(np.float32)
    head = head_mask(data, head_threshold(data, brain))
    assert orientation_check(head, brain, 2.0)["agrees"] is True
    # stored order read as if it were (P, S, R): axis 0 <- -y, 1 <- z, 2 <- x
    wrong = orientation_check(np.flip(head.transpose(1, 2, 0), 0),
                              np.flip(brain.transpose(1, 2, 0), 0), 2.0)
    assert wrong["agrees"] is False and "probably wrong" in wrong["check"]
