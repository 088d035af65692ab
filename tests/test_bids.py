"""Input discovery (pybids), input checks and output names."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bidsapp.bids import (
    AnatImage, check_dataset, check_image, check_sidecars, derivative_stem,
    find_anatomical_images, image_folder, load_layout, orientation_problem,
)
from edgecases import (
    ACCEPTED, ACCEPTED_HEADERS, REJECTED, make_dataset, explain, require_privileges, run, with_permission_checks, write_case,
)


def test_discovers_every_anatomical_image_of_ds_faces(ds_faces):
    images = find_anatomical_images(load_layout(ds_faces))
    assert len(images) == 10
    suffixes = sorted(image.suffix for image in images)
    assert suffixes == ["FLAIR"] + ["T1w"] * 8 + ["T2w"]
    keys = {image.key for image in images}
    assert "sub-xa30_run-1_T1w" in keys and "sub-adi_acq-fse_T2w" in keys
    assert all(image.path.is_file() for image in images)


def test_filters(ds_faces):
    layout = load_layout(ds_faces)
    images = find_anatomical_images(layout, subjects=["uber"], suffixes=["FLAIR"])
    assert [image.key for image in images] == ["sub-uber_FLAIR"]


def test_output_names_never_collide(ds_faces):
    images = find_anatomical_images(load_layout(ds_faces))
    names = set()
    for image in images:
        for desc in ("quickshear", "facemask"):
            for kwargs in ({}, {"mod": True, "suffix": "defacemask"}):
                name = derivative_stem(image, desc=desc, **kwargs)
                assert name not in names
                names.add(name)
    t1 = AnatImage(Path("a"), (("sub", "uber"), ("acq", "se")), "T1w")
    flair = AnatImage(Path("b"), (("sub", "uber"), ("acq", "se")), "FLAIR")
    assert derivative_stem(t1, desc="brain", mod=True, suffix="mask") != \
        derivative_stem(flair, desc="brain", mod=True, suffix="mask")


def test_image_folder_with_session():
    image = AnatImage(Path("x"), (("sub", "01"), ("ses", "pre"), ("run", "2")), "T2w")
    assert image_folder(image) == Path("sub-01/ses-pre/anat")
    assert derivative_stem(image, desc="facemask") == "sub-01_ses-pre_run-2_desc-facemask_T2w"


def test_pybids_indexes_output_names(tmp_path):
    """Names we write parse back into the entities we meant (pybids, derivatives config)."""
    from bids.layout import parse_file_entities

    image = AnatImage(Path("x"), (("sub", "01"), ("ses", "a"), ("acq", "mp"), ("run", "1")),
                      "FLAIR")
    name = derivative_stem(image, desc="quickshear", mod=True, suffix="defacemask") + ".nii.gz"
    entities = parse_file_entities(f"/sub-01/ses-a/anat/{name}", config=["bids", "derivatives"])
    assert entities["desc"] == "quickshear"
    assert entities["suffix"] == "defacemask"
    assert entities["acquisition"] == "mp" and entities["run"] == 1


# --- bad input: every case is a one-line reason naming the file --------------------------

def _save(path: Path, data, affine=None):
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


@pytest.fixture
def good(tmp_path):
    data = np.zeros((20, 20, 20), np.int16)
    data[5:15, 5:15, 5:15] = 100
    return _save(tmp_path / "good.nii.gz", data)


def test_good_image_passes(good):
    assert check_image(good) is None


def test_real_images_pass(ds_faces):
    for path in sorted(ds_faces.rglob("*.nii.gz")):
        assert check_image(path) is None, path


@pytest.fixture(scope="module")
def head(ds_faces):
    return ds_faces / "sub-xa30" / "anat" / "sub-xa30_run-1_T1w.nii.gz"


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_bad_images_give_one_line_naming_the_file(tmp_path, head, case):
    path = write_case(case, tmp_path / "anat" / f"sub-{case}_T1w.nii.gz", head)
    message = check_image(path)
    assert message is not None and REJECTED[case] in message
    assert message.startswith(str(path)) and "\n" not in message


@pytest.mark.parametrize("case", ACCEPTED + ACCEPTED_HEADERS)
def test_unusual_but_valid_images_pass(tmp_path, head, case):
    assert check_image(write_case(case, tmp_path / f"{case}.nii.gz", head)) is None


def test_every_real_image_passes(testdata):
    paths = sorted(testdata.glob("*/sub-*/anat/*.nii.gz"))
    paths += sorted(testdata.glob("pairs/*.nii.gz"))
    assert len(paths) >= 17
    assert [str(p) for p in paths if check_image(p)] == []


def test_no_orientation_is_named_in_one_line(tmp_path, head):
    path = write_case("noorient", tmp_path / "sub-x_T1w.nii.gz", head)
    warning = orientation_problem(path)
    assert warning.startswith(f"{path}: no orientation in the header") and "\n" not in warning
    assert "LAS (assumed)" in warning
    assert orientation_problem(head) is None


def test_invalid_sidecar_is_named_and_does_not_stop_indexing(tmp_path, head):
    """pybids used to fail on one bad sidecar, so the whole dataset stopped with exit 2."""
    bids = make_dataset(tmp_path / "bids", {"a": head, "b": head})
    bad = bids / "sub-a" / "anat" / "sub-a_T1w.json"
    bad.write_text('{"RepetitionTime": 2.3,')
    (bids / "sub-b" / "anat" / "sub-b_T1w.json").write_text('{"RepetitionTime": 2.3}')
    (bids / "T1w.json").write_text("[1, 2")  # inherited by every T1w
    images = find_anatomical_images(load_layout(bids))
    assert [image.key for image in images] == ["sub-a_T1w", "sub-b_T1w"]
    problems = check_sidecars(images, bids)
    assert len(problems) == 2, problems
    assert problems[0].startswith(f"{bids / 'T1w.json'}: not valid JSON")
    assert problems[1].startswith(f"{bad}: not valid JSON") and "\n" not in problems[1]
    assert check_sidecars(images[1:], bids) == problems[:1]


def test_dataset_description_checked(tmp_path):
    path = tmp_path / "dataset_description.json"
    assert "missing" in check_dataset(tmp_path) and str(path) in check_dataset(tmp_path)
    path.write_text("{not json")
    assert "not valid JSON" in check_dataset(tmp_path)
    path.write_text(json.dumps({"Name": "x"}))
    assert "BIDSVersion" in check_dataset(tmp_path)
    path.write_text(json.dumps({"Name": "x", "BIDSVersion": "1.9.0"}))
    assert check_dataset(tmp_path) is None


def test_unreadable_file(tmp_path, head):
    """A file the user may not read (checked without root's permission-bypassing capabilities)."""
    require_privileges()
    path = tmp_path / "sub-x_T1w.nii.gz"
    shutil.copyfile(head, path)
    path.chmod(0)
    code = f"from pathlib import Path; from bidsapp.bids import check_image; " \
           f"print(check_image(Path({str(path)!r})))"
    proc, _ = run(with_permission_checks([sys.executable, "-c", code]))
    assert proc.returncode == 0, explain(proc)
    assert proc.stdout.strip().startswith(f"{path}: not readable (permission denied)")
