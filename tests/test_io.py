"""Atomic writing and exact header preservation."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np

from bidsapp.io import atomic_write_json, save_like


def test_save_like_keeps_header_dtype_and_unchanged_voxels(ds_faces, tmp_path):
    source = ds_faces / "sub-adi" / "anat" / "sub-adi_acq-memprage_T1w.nii.gz"
    image = nib.load(source)
    data = np.asanyarray(image.dataobj).copy()
    data[:10] = 0
    written = save_like(image, data, tmp_path / "out.nii.gz")
    assert written.shape == image.shape
    assert written.get_data_dtype() == image.get_data_dtype()
    assert np.array_equal(written.affine, image.affine)
    assert written.header.binaryblock == image.header.binaryblock
    stored = np.asanyarray(written.dataobj)
    original = np.asanyarray(image.dataobj)
    assert np.array_equal(stored[10:], original[10:]) and not stored[:10].any()
    assert not list(tmp_path.glob(".*part*")), "temporary file left behind"


def test_save_like_keeps_scaling(tmp_path):
    raw = (np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) % 50)
    image = nib.Nifti1Image(raw, np.diag([2, 2, 2, 1]))
    image.header.set_slope_inter(0.5, 10.0)
    image.to_filename(tmp_path / "scaled.nii.gz")
    image = nib.load(tmp_path / "scaled.nii.gz")
    values = np.asanyarray(image.dataobj).copy()
    values[0] = 10.0  # raw 0
    written = save_like(image, values, tmp_path / "copy.nii.gz")
    assert (written.dataobj.slope, written.dataobj.inter) == (0.5, 10.0)
    assert np.array_equal(written.dataobj.get_unscaled()[1:], raw[1:])
    assert not written.dataobj.get_unscaled()[0].any()


def test_mask_written_as_uint8(tmp_path, ds_faces):
    image = nib.load(ds_faces / "sub-xa30" / "anat" / "sub-xa30_run-1_T1w.nii.gz")
    mask = np.zeros(image.shape, bool)
    mask[:3] = True
    written = save_like(image, mask.astype(np.uint8), tmp_path / "m.nii.gz", dtype=np.uint8)
    assert written.get_data_dtype() == np.uint8 and np.array_equal(written.affine, image.affine)
    assert np.asanyarray(written.dataobj).sum() == mask.sum()


def test_atomic_json_replaces_whole_file(tmp_path):
    path = tmp_path / "sub" / "x.json"
    atomic_write_json(path, {"a": np.int64(3), "b": np.float32(0.5), "c": float("nan")})
    assert json.loads(path.read_text()) == {"a": 3, "b": 0.5, "c": None}
    atomic_write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]


def test_load_once_reads_the_same_voxels_once(ds_faces, monkeypatch):
    """Every read of a ``load_once`` image equals nibabel's, and the file is decompressed once."""
    from nibabel.arrayproxy import ArrayProxy

    from bidsapp.io import load_once

    path = ds_faces / "sub-uber" / "anat" / "sub-uber_FLAIR.nii.gz"
    plain, once = nib.load(str(path)), load_once(path)
    reads = []
    original = ArrayProxy._get_unscaled
    monkeypatch.setattr(ArrayProxy, "_get_unscaled",
                        lambda self, slicer: (self is once.dataobj and reads.append(slicer))
                        or original(self, slicer))
    for _ in range(3):
        first = np.asanyarray(once.dataobj)
        assert first.dtype == np.asanyarray(plain.dataobj).dtype
        assert np.array_equal(first, np.asanyarray(plain.dataobj))
        first[...] = 0  # a caller's change never reaches the next read
    assert np.array_equal(once.get_fdata(), plain.get_fdata())
    assert np.array_equal(once.dataobj[2:5, :, 3], plain.dataobj[2:5, :, 3])
    assert len(reads) == 2  # the whole array once, and the slice


def test_compare_runs_ignores_the_shared_steps_costs(tmp_path):
    """A record that also names the cost of its shared steps (the template registration, absent
    before it was shared) equals the same record without it; any other key still counts."""
    from bidsapp.compare_runs import compare_outputs

    record = {"defacer": "facecut", "status": "ok", "wall_time_s": 3.0, "altered_voxels": 9}
    for name, extra in (("first", {}), ("second", {"shared_steps": {
            "template_registration": {"wall_time_s": 4.2, "peak_rss_mb": 300.0}}})):
        (tmp_path / name).mkdir()
        atomic_write_json(tmp_path / name / "a_desc-facecut_T1w.json", {**record, **extra})
        atomic_write_json(tmp_path / name / "b.json", {**record, "altered_voxels": len(name)})
    result = compare_outputs(tmp_path / "first", tmp_path / "second")
    assert result.same == ["a_desc-facecut_T1w.json"] and result.different == ["b.json"]


def test_compare_runs_forgives_only_the_named_new_keys(tmp_path):
    """``new_keys``: provenance a newer version adds is left out where the older record lacks
    it; a changed value of that key, or any other new key, still differs."""
    from bidsapp.compare_runs import compare_outputs

    old = {"status": "ok", "iqms": {"cjv": 0.4}}
    new = {"status": "ok", "iqms": {"cjv": 0.4}, "iqm_template": {"name": "MNI"}}
    for folder, records in (("first", {"a.json": old, "b.json": old,
                                       "c.json": {**old, "iqm_template": {"name": "MNI"}}}),
                            ("second", {"a.json": new, "b.json": {**new, "other": 1},
                                        "c.json": {**old, "iqm_template": {"name": "X"}}})):
        for name, record in records.items():
            atomic_write_json(tmp_path / folder / name, record)
    assert compare_outputs(tmp_path / "first", tmp_path / "second").different == [
        "a.json", "b.json", "c.json"]
    result = compare_outputs(tmp_path / "first", tmp_path / "second", new_keys=("iqm_template",))
    assert result.same == ["a.json"] and result.different == ["b.json", "c.json"]
