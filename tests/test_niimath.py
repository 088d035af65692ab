"""niimath: pydeface's template and face mask through ``niimath -deface``, run by the runner."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from bidsapp.defacers import availability, get_defacer
from bidsapp.defacers.runner import ALTERED, DEFACED, make_spec, run_measured
from faces import brain_mask, face_evidence

pytestmark = pytest.mark.slow  # about 20 s: the deepbet brain mask, then niimath (6 s)


@pytest.fixture(scope="module")
def niimath_run(ds_faces, tmp_path_factory):
    """One run of the niimath defacer on a real 1 mm T1w, as the pipeline runs it."""
    found = availability("niimath")
    if not found.available:
        pytest.skip(found.reason)
    path = ds_faces / "sub-xa30" / "anat" / "sub-xa30_run-2_T1w.nii.gz"
    image = nib.load(path)
    root = tmp_path_factory.mktemp("niimath")
    brain = brain_mask(image)
    mask_path = root / "brain_mask.nii.gz"
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), image.affine), mask_path)
    spec = make_spec(defacer="niimath", image=path, out_dir=root / "niimath", brain_mask=mask_path,
                     guard=get_defacer("niimath").guard_by_default, guard_margin_mm=5.0, seed=42,
                     threads=2)
    return {"image": image, "brain": brain, "record": run_measured(spec), "out": root / "niimath",
            "version": found.version}


def test_niimath_defaces_on_the_input_grid_and_keeps_the_brain(niimath_run):
    image, brain, record = niimath_run["image"], niimath_run["brain"], niimath_run["record"]
    assert record["status"] == "ok", record.get("traceback") or record.get("error")
    assert record["version"] == niimath_run["version"] and record["version"][0].isdigit()
    assert record["command"][2] == "-deface" and record["guard"]["applied"]
    defaced = nib.load(niimath_run["out"] / DEFACED)
    assert defaced.shape == image.shape and defaced.get_data_dtype() == image.get_data_dtype()
    assert np.array_equal(defaced.affine, image.affine)
    assert defaced.header.get_sform(coded=True)[1] == image.header.get_sform(coded=True)[1]
    original, data = np.asanyarray(image.dataobj), np.asanyarray(defaced.dataobj)
    altered = np.asanyarray(nib.load(niimath_run["out"] / ALTERED).dataobj) > 0
    assert np.array_equal(altered, data != original) and np.all(data[altered] == 0)
    assert not (altered & brain).any(), "a brain voxel was altered"
    assert record["altered_voxels"] == int(altered.sum()) > 0
    nose, kept = face_evidence(original, data, brain, image.affine, image.header.get_zooms()[:3])
    assert nose > 0.9, f"only {nose:.0%} of the nose tip removed"
    assert kept < 0.4, f"{kept:.0%} of the face box kept"
