"""The shareable export: faces replaced, identifiers scrubbed, the rest byte-identical.

Most tests use participant-level results written with bidsapp's own output writers for a fake
defacer ``slab`` (zeroes an anterior-inferior block; fast). One slow test exports a real
``bidsapp ... --defacers quickshear`` run. The BIDS validator tests need ``bids-validator``
1.15.0 (npm) on PATH or in $BIDS_VALIDATOR, and skip without it.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import file_hashes

from bidsapp.bids import find_anatomical_images, load_layout
from bidsapp.defacers.runner import ALTERED, DEFACED
from bidsapp.export import (
    DEFAULT_SCRUB_FIELDS,
    NIFTI_TEXT_FIELDS,
    ExportError,
    clean_nifti,
    export_dataset,
    image_name,
    nifti_identifiers,
    report_path,
    scrub_fields_for,
    scrub_metadata,
)
from bidsapp.io import save_like
from bidsapp.outputs import output_path, write_defacer_result, write_input_record

pytestmark = pytest.mark.xdist_group("export")

FAKE = "slab"
ISSUE_FIELDS = ("InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
                "StationName", "DeviceSerialNumber", "ProcedureStepDescription",
                "AcquisitionDateTime", "AcquisitionDate", "AcquisitionTime", "PatientName",
                "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "PatientWeight")
BIDSONYM_FIELDS = ("AcquisitionTime", "InstitutionAddress", "InstitutionName",
                   "InstitutionalDepartmentName", "ProcedureStepDescription", "ProtocolName",
                   "PulseSequenceDetails", "SeriesDescription", "global")


# --- helpers ---------------------------------------------------------------------------------

def _face_block(image: nib.Nifti1Image) -> np.ndarray:
    """Anterior 30 % x inferior 50 % of the field of view, in voxel order."""
    block = np.ones(image.shape[:3], bool)
    for axis, code in enumerate(nib.aff2axcodes(image.affine)):
        n = image.shape[axis]
        index = np.arange(n).reshape([-1 if a == axis else 1 for a in range(3)])
        if code in "AP":
            front = index >= int(n * 0.7) if code == "A" else index < int(n * 0.3) + 1
            block &= front
        elif code in "SI":
            block &= index < n // 2 if code == "S" else index >= n // 2
    return block


def _central_box(shape) -> np.ndarray:
    box = np.zeros(shape[:3], bool)
    box[tuple(slice(int(n * 0.35), int(n * 0.65) + 1) for n in shape[:3])] = True
    return box


def fake_participant_level(bids_dir: Path, output_dir: Path, work: Path) -> Path:
    """Results of a fake defacer for every anatomical image, through bidsapp's own writers."""
    for image in find_anatomical_images(load_layout(bids_dir)):
        result = work / image.key
        result.mkdir(parents=True)
        original = nib.load(image.path)
        data = np.asanyarray(original.dataobj)
        altered = _face_block(original) & (data != 0)
        defaced = np.where(altered, 0, data)
        save_like(original, defaced, result / DEFACED)
        save_like(original, altered.astype(np.uint8), result / ALTERED, dtype=np.uint8)
        save_like(original, _central_box(original.shape).astype(np.uint8),
                  result / "brain.nii.gz", dtype=np.uint8)
        write_input_record(output_dir, bids_dir, image, {"status": "ok"},
                           brain_mask=result / "brain.nii.gz")
        write_defacer_result(output_dir, bids_dir, image, FAKE, result, {
            "defacer": FAKE, "status": "ok", "error": None, "version": "0.0",
            "guard": {"applied": False}, "altered_voxels": int(altered.sum())})
    return output_dir


def _record(output_dir: Path, bids_dir: Path, relative: str) -> Path:
    image = next(i for i in find_anatomical_images(load_layout(bids_dir))
                 if i.path.name == Path(relative).name)
    return output_path(output_dir, image, desc=FAKE, ext=".json")


def _edit_record(path: Path, **changes) -> None:
    record = json.loads(path.read_text())
    record.update(changes)
    path.write_text(json.dumps(record))


def _json_keys(node, found=None) -> set[str]:
    found = set() if found is None else found
    if isinstance(node, dict):
        for key, value in node.items():
            found.add(key)
            _json_keys(value, found)
    elif isinstance(node, list):
        for value in node:
            _json_keys(value, found)
    return found


def _content(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _vox_offset(path: Path) -> int:
    """Where the voxels start, as stored (a loaded image's header no longer says)."""
    content = _content(path)
    klass = nib.Nifti2Header if int.from_bytes(content[:4], "little") == 540 or \
        int.from_bytes(content[:4], "big") == 540 else nib.Nifti1Header
    return int(klass.from_fileobj(io.BytesIO(content), check=False)["vox_offset"])


def _raw_voxels(path: Path) -> bytes:
    return _content(path)[_vox_offset(path):]


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _identifying_values(bids_dir: Path) -> set[str]:
    """The string values of scrubbed fields in the input: none may reach the export."""
    values = set()
    for path in bids_dir.rglob("*.json"):
        for key, value in json.loads(path.read_text()).items():
            if key in DEFAULT_SCRUB_FIELDS and isinstance(value, str) and len(value) >= 5:
                values.add(value)
    return values


def _leaks(text: str, values) -> list[str]:
    """The values found in ``text`` as JSON strings (a field name may contain a value)."""
    return [value for value in values if json.dumps(value) in text]


# --- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fake_output(ds_faces, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export_fake")
    return fake_participant_level(ds_faces, root / "out", root / "work")


@pytest.fixture(scope="module")
def exported(ds_faces, fake_output, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    before = file_hashes(ds_faces)
    report = export_dataset(ds_faces, fake_output, root / "share" / "ds-faces", FAKE,
                            include_defacemask=True)
    return {"report": report, "dir": root / "share" / "ds-faces", "before": before,
            "after": file_hashes(ds_faces), "root": root}


@pytest.fixture
def output_copy(fake_output, tmp_path) -> Path:
    """A private, editable copy of the fake results."""
    return Path(shutil.copytree(fake_output, tmp_path / "out"))


# --- units -----------------------------------------------------------------------------------

def test_default_fields_cover_bidsonym_and_dicom_identifiers():
    assert set(BIDSONYM_FIELDS) <= set(DEFAULT_SCRUB_FIELDS)
    assert set(ISSUE_FIELDS) <= set(DEFAULT_SCRUB_FIELDS)
    for name in ("ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName",
                 "AccessionNumber", "StudyInstanceUID", "SeriesInstanceUID"):
        assert name in DEFAULT_SCRUB_FIELDS
    for kept in ("PatientPosition", "Manufacturer", "EchoTime", "SoftwareVersions"):
        assert kept not in DEFAULT_SCRUB_FIELDS
    assert len(set(DEFAULT_SCRUB_FIELDS)) == len(DEFAULT_SCRUB_FIELDS)


def test_scrub_metadata_removes_nested_keys_and_keeps_order():
    data = {"EchoTime": 0.03, "InstitutionName": "Hospital",
            "global": {"const": {"PatientName": "X"}},
            "Items": [{"PatientID": "1", "Keep": 2}], "RepetitionTime": 2}
    scrubbed, removed = scrub_metadata(data)
    assert scrubbed == {"EchoTime": 0.03, "Items": [{"Keep": 2}], "RepetitionTime": 2}
    assert list(scrubbed) == ["EchoTime", "Items", "RepetitionTime"]
    assert removed == ["InstitutionName", "global", "Items[0].PatientID"]
    assert data["InstitutionName"] == "Hospital"  # the input object is not modified


def test_scrub_list_is_configurable():
    fields = scrub_fields_for(extra_fields=["CoilString"], keep_fields=["SeriesDescription"])
    assert "CoilString" in fields and "SeriesDescription" not in fields
    assert "InstitutionName" in fields


def _nifti_with_identifiers(path: Path, *, nifti2=False, big_endian=False,
                            gzip_name="IXI016-Guys-0697-T1.nii") -> nib.Nifti1Image:
    """A small NIfTI with text in every header field, an extension, scaling, gzip name/time."""
    raw = (np.arange(6 * 7 * 8, dtype=np.int16).reshape(6, 7, 8) % 300)
    klass = nib.Nifti2Image if nifti2 else nib.Nifti1Image
    image = klass(raw, np.diag([2.0, 2.0, 3.0, 1.0]))
    if big_endian:
        image = klass(raw, image.affine, image.header.as_byteswapped(">"))
    header = image.header
    header["descrip"] = b"TE=2.5;Time=150441.525;phase=1"
    header["aux_file"] = b"PatientName"
    header["intent_name"] = b"secret"
    if not nifti2:
        header["db_name"] = b"db"
    header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"Patient: Jane Doe"))
    plain = path.with_name("plain.nii")
    image.to_filename(plain)
    content = plain.read_bytes()
    plain.unlink()
    stored = (nib.Nifti2Header if nifti2 else nib.Nifti1Header).from_fileobj(
        io.BytesIO(content), check=False)
    stored["scl_slope"], stored["scl_inter"] = 0.5, 10.0  # nibabel would not store these
    content = stored.binaryblock + content[len(stored.binaryblock):]
    if path.name.endswith(".gz"):
        with open(path, "wb") as raw_file, gzip.GzipFile(gzip_name, "wb", fileobj=raw_file,
                                                         mtime=1605060370) as out:
            out.write(content)
    else:
        path.write_bytes(content)
    return nib.load(path)


@pytest.mark.parametrize("variant", ["nifti1-gz", "nifti1-plain", "nifti2-gz", "big-endian"])
def test_clean_nifti_clears_text_and_extensions_and_keeps_the_data(tmp_path, variant):
    name = "in.nii" if variant == "nifti1-plain" else "in.nii.gz"
    src = tmp_path / name
    original = _nifti_with_identifiers(src, nifti2=variant == "nifti2-gz",
                                       big_endian=variant == "big-endian")
    found = nifti_identifiers(src)
    assert "descrip" in found["header_fields"] and found["extensions"] == [6]
    if name.endswith(".gz"):
        assert found["gzip_header"] == ["file name", "time stamp"]
    dst = tmp_path / name.replace("in", "out")
    clean_nifti(src, dst)
    cleaned = nib.load(dst)
    for field in NIFTI_TEXT_FIELDS:
        if field in cleaned.header:
            assert not np.asarray(cleaned.header[field]).tobytes().strip(b"\x00"), field
    assert len(cleaned.header.extensions) == 0
    assert _vox_offset(dst) == (544 if variant == "nifti2-gz" else 352)
    assert cleaned.header.endianness == original.header.endianness
    assert cleaned.get_data_dtype() == original.get_data_dtype()
    assert np.array_equal(cleaned.affine, original.affine)
    scaling = (cleaned.dataobj.slope, cleaned.dataobj.inter)
    assert scaling == (original.dataobj.slope, original.dataobj.inter) == (0.5, 10.0)
    assert _raw_voxels(dst) == _raw_voxels(src)
    assert np.array_equal(np.asanyarray(cleaned.dataobj), np.asanyarray(original.dataobj))
    assert b"Jane Doe" not in _content(dst) and b"IXI016" not in dst.read_bytes()
    assert nifti_identifiers(dst) == {"header_fields": [], "extensions": [], "gzip_header": []}


# --- the export of ds-faces ------------------------------------------------------------------

def test_export_succeeds_and_replaces_every_anatomical_image(exported):
    report = exported["report"]
    assert report.ok and report.exit_code == 0, report.summary()
    assert [i.status for i in report.images] == ["defaced"] * 10
    assert all(i.brain_check == "brain mask" and i.brain_altered_voxels == 0
               for i in report.images)
    assert exported["dir"].is_dir()
    assert not [p for p in exported["dir"].parent.iterdir() if ".partial-" in p.name]


def test_input_dataset_unchanged(exported):
    assert exported["after"] == exported["before"]


def test_every_input_file_is_exported(exported, ds_faces):
    exported_files = _files(exported["dir"])
    assert _files(ds_faces) <= exported_files
    masks = exported_files - _files(ds_faces)
    assert len(masks) == 10 and all(m.endswith("_defacemask.nii.gz") for m in masks)


def test_every_listed_field_gone_from_every_json(exported, ds_faces):
    fields = set(DEFAULT_SCRUB_FIELDS)
    values = _identifying_values(ds_faces)
    assert {"Prisma Health Richland Hospital", "GIE IRM NORD", "67060",
            "Rorden^Rorden_Prisma"} <= values  # the test data holds what we scrub
    jsons = sorted(exported["dir"].rglob("*.json"))
    assert len(jsons) == 11
    for path in jsons:
        text = path.read_text()
        assert not _json_keys(json.loads(text)) & fields, path
        assert not _leaks(text, values), path


def test_no_identifying_value_left_anywhere(exported, ds_faces):
    """Not in any text file, nor in any NIfTI header (voxel bytes may match by chance)."""
    values = [v.encode() for v in _identifying_values(ds_faces)]
    for path in exported["dir"].rglob("*"):
        if path.is_file():
            content = _content(path)
            if path.name.endswith(".nii.gz"):
                content = content[:_vox_offset(path)]
                assert b"Time=" not in content, path  # dcm2niix's descrip
            assert not [v for v in values if v in content], path


def test_scrubbed_json_is_the_input_minus_the_removed_keys(exported, ds_faces):
    files = exported["report"].files
    scrubbed = {rel for rel, entry in files.items() if entry["action"] == "scrubbed"}
    assert scrubbed == {p.relative_to(ds_faces).as_posix()
                        for p in ds_faces.glob("sub-*/anat/*.json")
                        if "ixi" not in p.name}
    for rel in scrubbed:
        before = json.loads((ds_faces / rel).read_text())
        after = json.loads((exported["dir"] / rel).read_text())
        removed = files[rel]["removed_fields"]
        assert {k: v for k, v in before.items() if k not in removed} == after
        assert list(after) == [k for k in before if k not in removed]  # order kept
        assert {"InstitutionName", "DeviceSerialNumber", "StationName"} <= set(removed)


def test_every_other_file_is_byte_identical(exported, ds_faces):
    files = exported["report"].files
    changed = {"defaced", "scrubbed", "updated", "header-cleared", "added", "rows-removed"}
    unchanged = {rel for rel, entry in files.items() if entry["action"] not in changed}
    assert unchanged == {"README", "participants.tsv", "sub-ixi012/anat/sub-ixi012_T1w.json",
                         "sub-ixi015/anat/sub-ixi015_T1w.json"}
    for rel in unchanged:
        assert files[rel]["action"] in ("linked", "copied")
        assert (exported["dir"] / rel).read_bytes() == (ds_faces / rel).read_bytes(), rel


def test_nifti_headers_are_clean(exported):
    images = sorted(exported["dir"].rglob("*.nii.gz"))
    assert len(images) == 20
    for path in images:
        assert nifti_identifiers(path) == {"header_fields": [], "extensions": [],
                                           "gzip_header": []}, path
    ixi = exported["report"].files["sub-ixi012/anat/sub-ixi012_T1w.nii.gz"]
    assert ixi["extensions_dropped"]  # the IXI images carry a header extension


def test_anatomical_images_equal_the_defacer_output(exported, ds_faces, fake_output):
    for image in find_anatomical_images(load_layout(ds_faces)):
        rel = image.path.relative_to(ds_faces)
        shipped = nib.load(exported["dir"] / rel)
        defaced = nib.load(output_path(fake_output, image, desc=FAKE))
        original = nib.load(image.path)
        assert np.array_equal(np.asanyarray(shipped.dataobj), np.asanyarray(defaced.dataobj))
        assert _raw_voxels(exported["dir"] / rel) == _raw_voxels(
            output_path(fake_output, image, desc=FAKE))
        assert shipped.get_data_dtype() == original.get_data_dtype()
        assert np.array_equal(shipped.affine, original.affine)
        assert shipped.header.get_sform(coded=True)[1] == original.header.get_sform(coded=True)[1]
        assert shipped.header.get_qform(coded=True)[1] == original.header.get_qform(coded=True)[1]
        assert not np.array_equal(np.asanyarray(shipped.dataobj),
                                  np.asanyarray(original.dataobj))  # the face is gone


def test_defacemasks_have_raw_bids_names(exported, ds_faces, fake_output):
    for image in find_anatomical_images(load_layout(ds_faces)):
        name = "_".join([f"{k}-{v}" for k, v in image.entities]
                        + [f"mod-{image.suffix}", "defacemask.nii.gz"])
        shipped = exported["dir"] / image.path.parent.relative_to(ds_faces) / name
        source = output_path(fake_output, image, desc=FAKE, suffix="defacemask", mod=True)
        assert np.array_equal(np.asanyarray(nib.load(shipped).dataobj),
                              np.asanyarray(nib.load(source).dataobj))


def test_dataset_description_stays_raw_with_generated_by(exported, ds_faces):
    before = json.loads((ds_faces / "dataset_description.json").read_text())
    after = json.loads((exported["dir"] / "dataset_description.json").read_text())
    assert after["DatasetType"] == "raw" and after["BIDSVersion"] == before["BIDSVersion"]
    assert after["GeneratedBy"][-1]["Name"] == "bidsapp export"
    assert FAKE in after["GeneratedBy"][-1]["Description"]
    assert {k: v for k, v in after.items() if k != "GeneratedBy"} == before


def test_report_beside_the_export_lists_changes_without_values(exported, ds_faces):
    path = report_path(exported["dir"])
    assert path == exported["dir"].parent / "ds-faces_deid-report.json"
    assert exported["report"].report_path == path
    text = path.read_text()
    report = json.loads(text)
    assert report["status"] == "ok" and report["defacer"] == FAKE
    assert not _leaks(text, _identifying_values(ds_faces))
    entry = report["files"]["sub-hfs/anat/sub-hfs_acq-fl2d_T1w.json"]
    assert entry["action"] == "scrubbed" and "InstitutionAddress" in entry["removed_fields"]
    image = report["files"]["sub-hfs/anat/sub-hfs_acq-fl2d_T1w.nii.gz"]
    assert image["action"] == "defaced" and image["header_fields_cleared"] == ["descrip"]
    assert image["source"].endswith(f"_desc-{FAKE}_T1w.nii.gz")
    assert report["summary"]["images_defaced"] == 10
    assert "InstitutionName" in report["summary"]["fields_removed"]
    assert len(report["files"]) == len(_files(exported["dir"]))


# --- refusals --------------------------------------------------------------------------------

HFP = "sub-hfp/anat/sub-hfp_acq-fl2d_T1w.nii.gz"


def _only(report, rel):
    return next(i for i in report.images if i.image == rel)


def test_failed_defacer_refuses_the_export(ds_faces, output_copy, tmp_path):
    _edit_record(_record(output_copy, ds_faces, HFP), status="failed", error="boom")
    report = export_dataset(ds_faces, output_copy, tmp_path / "share", FAKE)
    assert report.status == "refused" and report.exit_code == 1
    assert [i.image for i in report.by_status("refused")] == [HFP]
    assert "failed" in _only(report, HFP).reasons[0] and "boom" in _only(report, HFP).reasons[0]
    assert not (tmp_path / "share").exists()
    assert json.loads(report_path(tmp_path / "share").read_text())["status"] == "refused"
    assert HFP in report.summary()


def test_forced_export_leaves_out_an_image_with_no_defaced_version(ds_faces, output_copy,
                                                                   tmp_path):
    _edit_record(_record(output_copy, ds_faces, HFP), status="failed", error="boom")
    adi_t2 = "sub-adi/anat/sub-adi_acq-fse_T2w.nii.gz"
    _record(output_copy, ds_faces, adi_t2).unlink()  # never run
    report = export_dataset(ds_faces, output_copy, tmp_path / "share", FAKE, force=True)
    assert report.ok, report.summary()
    assert {i.image for i in report.by_status("omitted")} == {HFP, adi_t2}
    files = _files(tmp_path / "share")
    assert not any(f.startswith("sub-hfp/") for f in files)  # nothing left of sub-hfp
    assert "sub-adi/anat/sub-adi_acq-fse_T2w.json" not in files
    assert "sub-adi/anat/sub-adi_acq-memprage_T1w.nii.gz" in files
    participants = (tmp_path / "share" / "participants.tsv").read_text()
    assert "sub-hfp" not in participants and "sub-adi" in participants
    assert report.files["participants.tsv"] == {"action": "rows-removed", "rows_removed": 1}


def _brain_metrics_of(output_dir: Path, bids_dir: Path, brain_is_altered: bool) -> dict:
    """The metrics step's brain measures of HFP's fake result, with a brain mask that is (or
    is not) the altered region."""
    from bidsapp.metrics.brain import brain_preservation

    image = next(i for i in find_anatomical_images(load_layout(bids_dir))
                 if i.path.name == Path(HFP).name)
    altered = nib.load(output_path(output_dir, image, desc=FAKE, suffix="defacemask", mod=True))
    changed = np.asanyarray(altered.dataobj) > 0
    brain = changed if brain_is_altered else np.zeros_like(changed)
    return brain_preservation(changed, brain, altered.header.get_zooms())


@pytest.mark.parametrize("metrics", ["measured", {"brain_altered": True}])
def test_brain_altered_in_the_record_refuses_unless_forced(ds_faces, output_copy, tmp_path,
                                                           metrics):
    if metrics == "measured":
        metrics = _brain_metrics_of(output_copy, ds_faces, brain_is_altered=True)
    _edit_record(_record(output_copy, ds_faces, HFP), metrics=metrics)
    refused = export_dataset(ds_faces, output_copy, tmp_path / "a", FAKE)
    assert refused.status == "refused"
    assert "brain voxel" in _only(refused, HFP).reasons[0]
    assert _only(refused, HFP).brain_check == "record"
    assert _only(refused, HFP).brain_altered_voxels == metrics.get("brain_changed_voxels")
    forced = export_dataset(ds_faces, output_copy, tmp_path / "b", FAKE, force=True)
    assert forced.ok and _only(forced, HFP).status == "forced"
    assert (tmp_path / "b" / HFP).is_file()


def test_the_record_brain_metric_is_read_from_metrics_only(ds_faces, output_copy, tmp_path):
    untouched = _brain_metrics_of(output_copy, ds_faces, brain_is_altered=False)
    # a count elsewhere (a defacer's own parameters) is not the metrics step's measure
    _edit_record(_record(output_copy, ds_faces, HFP), metrics=untouched,
                 parameters={"brain_changed_voxels": 7}, brain_changed_voxels=7)
    report = export_dataset(ds_faces, output_copy, tmp_path / "share", FAKE)
    decision = _only(report, HFP)
    assert report.ok and decision.brain_check == "record"
    assert decision.brain_altered_voxels == 0


def test_brain_altered_by_the_mask_check_refuses(ds_faces, output_copy, tmp_path):
    image = next(i for i in find_anatomical_images(load_layout(ds_faces))
                 if i.subject == "hfp")
    altered = output_path(output_copy, image, desc=FAKE, suffix="defacemask", mod=True)
    brain = output_path(output_copy, image, desc="brain", suffix="mask", mod=True)
    shutil.copyfile(altered, brain)  # every altered voxel is now "brain"
    report = export_dataset(ds_faces, output_copy, tmp_path / "share", FAKE)
    decision = _only(report, HFP)
    assert report.status == "refused" and decision.brain_check == "brain mask"
    assert decision.brain_altered_voxels == decision.altered_voxels > 0


def test_a_defacer_that_changed_nothing_is_refused(ds_faces, output_copy, tmp_path):
    _edit_record(_record(output_copy, ds_faces, HFP), altered_voxels=0)
    report = export_dataset(ds_faces, output_copy, tmp_path / "share", FAKE)
    assert report.status == "refused" and "changed no voxel" in _only(report, HFP).reasons[0]


def test_a_failed_group_verdict_refuses_unless_forced(ds_faces, output_copy, tmp_path):
    """The group level's verdict (face remains, re-identified) refuses; n/a only warns."""
    names = {image_name(Path(i.path)): i for i in find_anatomical_images(load_layout(ds_faces))}
    verdicts = {(name, FAKE): ("pass", "ok") for name in names}
    verdicts[("sub-hfp_acq-fl2d_T1w", FAKE)] = ("fail", "re-identified: rank 1 at 0.41")
    del verdicts[("sub-hfs_acq-fl2d_T1w", FAKE)]
    refused = export_dataset(ds_faces, output_copy, tmp_path / "a", FAKE, verdicts=verdicts)
    assert refused.status == "refused" and [i.image for i in refused.by_status("refused")] == [HFP]
    assert _only(refused, HFP).reasons == ["the group verdict is fail: re-identified: rank 1 "
                                           "at 0.41"]
    assert _only(refused, HFP).verdict == "fail"
    assert "re-identified" in refused.summary()
    forced = export_dataset(ds_faces, output_copy, tmp_path / "b", FAKE, force=True,
                            verdicts=verdicts)
    assert forced.ok and _only(forced, HFP).status == "forced"
    assert any(w.startswith("sub-hfs/anat/sub-hfs_acq-fl2d_T1w.nii.gz: no group verdict")
               for w in forced.warnings)
    saved = json.loads(report_path(tmp_path / "b").read_text())
    assert {i["image"]: i["verdict"] for i in saved["images"]}[HFP] == "fail"


def test_stale_result_off_the_input_grid_is_refused(ds_faces, output_copy, tmp_path):
    image = next(i for i in find_anatomical_images(load_layout(ds_faces))
                 if i.subject == "hfp")
    defaced = output_path(output_copy, image, desc=FAKE)
    small = nib.load(defaced)
    nib.save(nib.Nifti1Image(np.asanyarray(small.dataobj)[:-1], small.affine), defaced)
    report = export_dataset(ds_faces, output_copy, tmp_path / "share", FAKE)
    assert report.status == "refused" and "grid" in _only(report, HFP).reasons[0]


# --- requests that cannot work ---------------------------------------------------------------

def test_unworkable_requests_raise_and_write_nothing(ds_faces, fake_output, tmp_path):
    with pytest.raises(ExportError, match="overlaps bids_dir"):
        export_dataset(ds_faces, fake_output, ds_faces / "share", FAKE)
    with pytest.raises(ExportError, match="overlaps output_dir"):
        export_dataset(ds_faces, fake_output, fake_output / "share", FAKE)
    with pytest.raises(ExportError, match="overlaps output_dir"):
        export_dataset(ds_faces, fake_output, fake_output.parent, FAKE)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(ExportError, match="not an empty folder"):
        export_dataset(ds_faces, fake_output, busy, FAKE)
    with pytest.raises(ExportError, match="no results of defacer 'pydeface'"):
        export_dataset(ds_faces, fake_output, tmp_path / "share", "pydeface")
    assert not (ds_faces / "share").exists() and not (tmp_path / "share").exists()
    assert not (tmp_path / "share_deid-report.json").exists()


def test_an_empty_existing_export_dir_is_used(ds_faces, fake_output, tmp_path):
    (tmp_path / "share").mkdir()
    report = export_dataset(ds_faces, fake_output, tmp_path / "share", FAKE)
    assert report.ok and (tmp_path / "share" / "README").is_file()


def test_failure_midway_leaves_no_partial_export(ds_faces, fake_output, tmp_path,
                                                 monkeypatch):
    from bidsapp.export import tree

    calls = []

    def flaky(src, dst):
        calls.append(src)
        if len(calls) == 3:
            raise OSError("disk full")
        return clean_nifti(src, dst)

    monkeypatch.setattr(tree, "clean_nifti", flaky)
    report = export_dataset(ds_faces, fake_output, tmp_path / "share", FAKE)
    assert report.status == "failed" and report.exit_code == 1
    assert any("disk full" in p for p in report.problems)
    assert list(tmp_path.iterdir()) == [tmp_path / "share_deid-report.json"]


# --- a dataset with more than anat/ ----------------------------------------------------------

@pytest.fixture
def rich_dataset(ds_faces, tmp_path) -> Path:
    """ds-faces' sub-ixi012 plus what real datasets hold besides anatomical images."""
    root = tmp_path / "bids"
    for rel in ("dataset_description.json", "README", "sub-ixi012/anat/sub-ixi012_T1w.nii.gz",
                "sub-ixi012/anat/sub-ixi012_T1w.json"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ds_faces / rel, root / rel)
    (root / "participants.tsv").write_text("participant_id\nsub-ixi012\n")
    plain = root / "sub-ixi012" / "anat" / "sub-ixi012_acq-plain_T1w.nii"
    plain.write_bytes(gzip.decompress((ds_faces / "sub-ixi012/anat/sub-ixi012_T1w.nii.gz")
                                      .read_bytes()))
    (root / "T1w.json").write_text(json.dumps({"InstitutionName": "Guys", "EchoTime": 0.004}))
    (root / ".bidsignore").write_text("extra/\n")
    func = root / "sub-ixi012" / "func"
    func.mkdir()
    bold = nib.Nifti1Image(np.arange(4 * 4 * 4 * 3, dtype=np.int16).reshape(4, 4, 4, 3),
                           np.diag([3.0, 3.0, 3.0, 1.0]))
    bold.header["descrip"] = b"Time=101010.000"
    bold.header.set_xyzt_units("mm", "sec")
    bold.header["pixdim"][4] = 2.0
    bold.to_filename(func / "sub-ixi012_task-rest_bold.nii.gz")
    (func / "sub-ixi012_task-rest_bold.json").write_text(json.dumps(
        {"TaskName": "rest", "RepetitionTime": 2.0, "StationName": "MRC1"}))
    (root / "sub-ixi012" / "sub-ixi012_scans.tsv").write_text(
        "filename\tacq_time\nanat/sub-ixi012_T1w.nii.gz\t2020-01-01T10:00:00\n")
    for hidden in ("sourcedata/dicom/1.dcm", "derivatives/fmriprep/x.nii.gz",
                   ".heudiconv/ixi012/info/dicominfo.tsv", "sub-ixi012/.DS_Store"):
        (root / hidden).parent.mkdir(parents=True, exist_ok=True)
        (root / hidden).write_text("PatientName Jane Doe")
    return root


def test_everything_else_in_a_dataset(rich_dataset, tmp_path):
    out = fake_participant_level(rich_dataset, tmp_path / "out", tmp_path / "work")
    before = file_hashes(rich_dataset)
    report = export_dataset(rich_dataset, out, tmp_path / "share", FAKE)
    share = tmp_path / "share"
    assert report.ok, report.summary()
    assert file_hashes(rich_dataset) == before
    assert json.loads((share / "T1w.json").read_text()) == {"EchoTime": 0.004}
    bold = "sub-ixi012/func/sub-ixi012_task-rest_bold.nii.gz"
    assert report.files[bold] == {"action": "header-cleared", "header_fields_cleared":
                                  ["descrip"]}
    assert _raw_voxels(share / bold) == _raw_voxels(rich_dataset / bold)
    assert nib.load(share / bold).header["pixdim"][4] == 2.0
    assert "StationName" not in json.loads((share / bold.replace(".nii.gz", ".json"))
                                           .read_text())
    assert (share / ".bidsignore").read_text() == "extra/\n"
    plain = "sub-ixi012/anat/sub-ixi012_acq-plain_T1w.nii"  # stays uncompressed, defaced
    assert report.files[plain]["action"] == "defaced"
    assert (share / plain).read_bytes()[:2] != b"\x1f\x8b"
    assert _raw_voxels(share / plain) == _raw_voxels(out / report.files[plain]["source"])
    assert set(report.excluded) == {".heudiconv/", "derivatives/", "sourcedata/",
                                    "sub-ixi012/.DS_Store"}
    assert not any(b"Jane Doe" in _content(p) for p in share.rglob("*") if p.is_file())
    assert any("acq_time" in w for w in report.warnings)
    readme = share / "README"
    assert report.files["README"]["action"] == "linked" and readme.samefile(
        rich_dataset / "README")
    copied = export_dataset(rich_dataset, out, tmp_path / "copy", FAKE, hardlink=False)
    assert copied.files["README"]["action"] == "copied"
    assert not (tmp_path / "copy" / "README").samefile(rich_dataset / "README")


# --- the BIDS validator ----------------------------------------------------------------------

@pytest.fixture(scope="session")
def validator() -> str:
    """The bids-validator executable (asked for first, so a skip costs no export)."""
    exe = os.environ.get("BIDS_VALIDATOR") or shutil.which("bids-validator")
    if not exe or not shutil.which("node"):
        reason = ("bids-validator (npm bids-validator@1.15.0) not found on PATH or in "
                  "$BIDS_VALIDATOR; .ci/run installs it")
        if os.environ.get("BIDSAPP_REQUIRE_VALIDATOR"):
            pytest.fail(reason)
        pytest.skip(reason)
    return exe


def validator_issues(validator: str, path: Path) -> dict[str, set[str]]:
    proc = subprocess.run([validator, "--json", str(path)], capture_output=True, text=True,
                          timeout=600, check=False)
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"bids-validator gave no JSON (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return {level: {issue["key"] for issue in result["issues"][level]}
            for level in ("errors", "warnings")}


def test_validator_finds_no_new_error(validator, exported, ds_faces):
    before = validator_issues(validator, ds_faces)
    after = validator_issues(validator, exported["dir"])
    assert not after["errors"] - before["errors"], after["errors"]
    print(f"\nbids-validator input: {before}\nexport: {after}")


def test_validator_after_a_forced_export_with_omissions(validator, ds_faces, output_copy,
                                                        tmp_path):
    for relative in (HFP, "sub-adi/anat/sub-adi_acq-fse_T2w.nii.gz"):
        _edit_record(_record(output_copy, ds_faces, relative), status="failed")
    report = export_dataset(ds_faces, output_copy, tmp_path / "share", FAKE, force=True,
                            include_defacemask=True)
    assert report.ok
    before = validator_issues(validator, ds_faces)
    after = validator_issues(validator, tmp_path / "share")
    assert not after["errors"] - before["errors"], after["errors"]


# --- a real participant-level run ------------------------------------------------------------

@pytest.mark.slow
def test_export_of_a_real_quickshear_run(ds_faces, tmp_path):
    before = file_hashes(ds_faces)
    proc = subprocess.run(
        [sys.executable, "-m", "bidsapp", str(ds_faces), str(tmp_path / "out"), "participant",
         "--participant-label", "hfs", "-w", str(tmp_path / "work"), "--nprocs", "1",
         "--defacers", "quickshear"], capture_output=True, text=True, timeout=1800, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    refused = export_dataset(ds_faces, tmp_path / "out", tmp_path / "a", "quickshear")
    assert refused.status == "refused" and len(refused.by_status("refused")) == 9
    report = export_dataset(ds_faces, tmp_path / "out", tmp_path / "share", "quickshear",
                            force=True, include_defacemask=True)
    assert report.ok, report.summary()
    hfs = _only(report, "sub-hfs/anat/sub-hfs_acq-fl2d_T1w.nii.gz")
    assert hfs.status == "defaced" and hfs.brain_check in ("record", "brain mask")
    assert hfs.brain_altered_voxels == 0 and hfs.defacer_version
    assert _files(tmp_path / "share") == {
        "README", "dataset_description.json", "participants.tsv",
        "sub-hfs/anat/sub-hfs_acq-fl2d_T1w.json", "sub-hfs/anat/sub-hfs_acq-fl2d_T1w.nii.gz",
        "sub-hfs/anat/sub-hfs_acq-fl2d_mod-T1w_defacemask.nii.gz"}
    assert file_hashes(ds_faces) == before
    exe = os.environ.get("BIDS_VALIDATOR") or shutil.which("bids-validator")
    if exe:
        after = validator_issues(exe, tmp_path / "share")
        assert not after["errors"] - validator_issues(exe, ds_faces)["errors"]
