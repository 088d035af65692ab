"""Input discovery (pybids), input checks and output names."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bidsapp.bids import (
    AnatImage, check_image, derivative_stem, find_anatomical_images, image_folder, load_layout,
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


@pytest.mark.parametrize("case, expected", [
    ("truncated", "truncated or corrupt"),
    ("not_gzip", "cannot be read"),
    ("zero_bytes", "empty file"),
    ("four_d", "4D"),
    ("two_d", "2D"),
    ("nan", "NaN or Inf"),
    ("all_zero", "every voxel is zero"),
    ("broken_link", "broken symbolic link"),
])
def test_bad_images_give_one_line_naming_the_file(tmp_path, good, case, expected):
    path = tmp_path / f"{case}.nii.gz"
    if case == "truncated":
        content = good.read_bytes()
        path.write_bytes(content[: len(content) // 2])
    elif case == "not_gzip":
        path.write_bytes(b"this is not a NIfTI file at all" * 20)
    elif case == "zero_bytes":
        path.write_bytes(b"")
    elif case == "four_d":
        _save(path, np.ones((8, 8, 8, 3), np.int16))
    elif case == "two_d":
        _save(path, np.ones((8, 8, 1), np.int16))
    elif case == "nan":
        data = np.ones((8, 8, 8), np.float32)
        data[1, 1, 1] = np.nan
        _save(path, data)
    elif case == "all_zero":
        _save(path, np.zeros((8, 8, 8), np.int16))
    elif case == "broken_link":
        os.symlink(tmp_path / "annex" / "objects" / "missing", path)
    message = check_image(path)
    assert message is not None and expected in message
    assert str(path) in message and "\n" not in message


def test_unreadable_file(tmp_path, good):
    if os.geteuid() == 0:
        pytest.skip("root can read any file")
    good.chmod(0)
    assert "permission" in check_image(good)


def test_gzip_that_is_not_nifti(tmp_path):
    path = tmp_path / "junk.nii.gz"
    path.write_bytes(gzip.compress(b"\x00" * 1000))
    assert "cannot be read" in check_image(path)
