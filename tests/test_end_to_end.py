"""The whole participant level on real data, through the command line, as a user runs it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import file_hashes
from edgecases import run_bidsapp

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

#: facecut is the default defacer; the others are the native ones it is compared with.
NATIVE = ["facecut", "quickshear", "deepdefacer", "facemask"]
RATINGS = Path(__file__).parent / "data" / "visual_ratings.tsv"


@pytest.fixture(scope="module")
def faces_run(ds_faces, tmp_path_factory):
    """One participant-level run on all of ds-faces, then the same command again."""
    root = tmp_path_factory.mktemp("e2e")
    before = file_hashes(ds_faces)
    args = (ds_faces, root / "out", "participant", "-w", root / "work", "--nprocs", 2,
            "--defacers", *NATIVE)
    first, first_time = run_bidsapp(*args)
    second, second_time = run_bidsapp(*args)
    timings = {"first_s": round(first_time, 1), "rerun_s": round(second_time, 1)}
    (root / "timings.json").write_text(json.dumps(timings))
    print(f"\nparticipant run on ds-faces: {timings}")
    return {"out": root / "out", "first": first, "second": second, "timings": timings,
            "before": before}


@pytest.fixture(scope="module")
def more_run(testdata, tmp_path_factory):
    """One participant-level run on ds-more (an infant and an adult, 2 images)."""
    root = tmp_path_factory.mktemp("e2e-more")
    proc, seconds = run_bidsapp(testdata / "ds-more", root / "out", "participant", "-w",
                                root / "work", "--nprocs", 2, "--defacers", *NATIVE)
    print(f"\nparticipant run on ds-more: {seconds:.1f} s")
    return {"out": root / "out", "proc": proc}


def test_verdict_agrees_with_the_visual_ratings(faces_run, more_run):
    """The verdict of every rated result of the two runs against tests/data/visual_ratings.tsv."""
    import pandas as pd

    from bidsapp import results

    ratings = pd.read_csv(RATINGS, sep="\t", comment="#").rename(columns={"notes": "rating_notes"})
    tables = [results.aggregate(faces_run["out"]).assign(dataset="ds-faces"),
              results.aggregate(more_run["out"]).assign(dataset="ds-more")]
    table = pd.concat(tables).merge(ratings, on=["dataset", "image", "defacer"])
    assert len(table) >= 0.9 * len(ratings[ratings["defacer"].isin(NATIVE)])
    table["agrees"] = (table["verdict"] == "pass") == (table["rating"] == "pass")
    shown = ["image", "defacer", "rating", "verdict", "verdict_reason", "rating_notes"]
    print(f"\nverdict agrees with the ratings on {table['agrees'].sum()} of {len(table)}")
    print(table.loc[~table["agrees"], shown].to_string(index=False))
    assert table["agrees"].mean() >= 0.9


def test_exit_code_and_summary(faces_run):
    first = faces_run["first"]
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "0 problem(s)" in first.stdout
    assert "done deepdefacer on sub-uber_FLAIR" in first.stdout
    assert "nipype.workflow" not in first.stdout  # nipype's chatter goes to the log file


def test_input_dataset_untouched(faces_run, ds_faces):
    assert file_hashes(ds_faces) == faces_run["before"]


def test_pybids_indexes_derivatives(faces_run, ds_faces):
    from bids import BIDSLayout

    layout = BIDSLayout(str(faces_run["out"]), validate=False, is_derivative=True)
    description = json.loads((faces_run["out"] / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "bidsapp"
    for defacer in NATIVE:
        defaced = layout.get(desc=defacer, extension=".nii.gz",
                             suffix=["T1w", "T2w", "FLAIR"])
        assert len(defaced) == 10, defacer
        masks = layout.get(desc=defacer, suffix="defacemask", extension=".nii.gz")
        assert len(masks) == 10
    paths = [f.path for f in layout.get()]
    assert len(paths) == len(set(paths))


def test_every_defaced_image_is_on_the_input_grid(faces_run, ds_faces):
    out = faces_run["out"]
    originals = sorted(ds_faces.rglob("anat/*.nii.gz"))
    assert len(originals) == 10
    for original_path in originals:
        original = nib.load(original_path)
        data = np.asanyarray(original.dataobj)
        stem, suffix = original_path.name[: -len(".nii.gz")].rsplit("_", 1)
        folder = out / original_path.parent.relative_to(ds_faces)
        for defacer in NATIVE:
            defaced = nib.load(folder / f"{stem}_desc-{defacer}_{suffix}.nii.gz")
            mask_img = nib.load(folder / f"{stem}_mod-{suffix}_desc-{defacer}_defacemask.nii.gz")
            mask = np.asanyarray(mask_img.dataobj).astype(bool)
            label = f"{original_path.name} {defacer}"
            assert defaced.shape == original.shape, label
            assert np.array_equal(defaced.affine, original.affine), label
            assert defaced.get_data_dtype() == original.get_data_dtype(), label
            assert mask.any(), f"{label}: nothing removed from an image with a face"
            values = np.asanyarray(defaced.dataobj)
            assert np.array_equal(values[~mask], data[~mask]), label
            assert (values[mask] != data[mask]).all(), label
            record = json.loads((folder / f"{stem}_desc-{defacer}_{suffix}.json").read_text())
            assert record["status"] == "ok" and record["peak_rss_mb"] > 0
            assert record["wall_time_s"] > 0 and record["version"]
            assert record["mode"] == ("direct" if suffix == "T1w" else "carried-from-T1w")


def test_rerun_resumes_from_work_dir(faces_run):
    second, timings = faces_run["second"], faces_run["timings"]
    assert second.returncode == 0, second.stderr[-2000:]
    assert timings["rerun_s"] < 0.5 * timings["first_s"], timings


def test_already_defaced_dataset_runs(ds_defaced, tmp_path):
    proc, _ = run_bidsapp(ds_defaced, tmp_path / "out", "participant", "-w", tmp_path / "work",
                       "--defacers", "quickshear", "facemask")
    # sub-ds001946 and its refaced copy say 1 mm voxels for about 2 mm: a 167 ml brain, which
    # the template defacers refuse with the reason (issue 18); quickshear defaces all three
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert len(list((tmp_path / "out").rglob("*_desc-quickshear_T1w.nii.gz"))) == 3
    assert len(list((tmp_path / "out").rglob("*_desc-facemask_T1w.nii.gz"))) == 1
    for name in ("sub-ds001946", "sub-ds001946r"):
        record = json.loads(next((tmp_path / "out").rglob(f"{name}_desc-facemask_T1w.json"))
                            .read_text())
        assert record["status"] == "failed", name
        assert "smaller than the 300 ml" in record["error"] and "voxel sizes" in record["error"]


def test_bad_image_is_isolated(ds_faces, tmp_path):
    """A corrupt image fails alone: the others finish, exit code 1, the file is named."""
    bids = tmp_path / "bids"
    shutil.copytree(ds_faces / "sub-xa30", bids / "sub-xa30")
    shutil.copy(ds_faces / "dataset_description.json", bids)
    bad = bids / "sub-xa30" / "anat" / "sub-xa30_run-2_T1w.nii.gz"
    bad.write_bytes(bad.read_bytes()[:5000])
    only_bad = bids / "sub-gone" / "anat" / "sub-gone_T1w.nii.gz"  # nothing of it can run
    only_bad.parent.mkdir(parents=True)
    only_bad.write_bytes(bad.read_bytes())
    before = file_hashes(bids)
    proc, _ = run_bidsapp(bids, tmp_path / "out", "participant", "-w", tmp_path / "work",
                       "--defacers", "quickshear")
    assert proc.returncode == 1
    assert str(bad) in proc.stderr and "truncated" in proc.stderr
    # sub-xa30's report is a workflow step; sub-gone has no step, so its report (listing
    # the error) is drawn after the workflow
    log = proc.stdout + proc.stderr
    assert "done report sub-xa30" in log and f"report: {tmp_path / 'out' / 'sub-gone.html'}" in log
    assert "truncated" in (tmp_path / "out" / "sub-gone.html").read_text()
    assert (tmp_path / "out" / "sub-xa30.html").is_file()
    anat = tmp_path / "out" / "sub-xa30" / "anat"
    assert (anat / "sub-xa30_run-1_desc-quickshear_T1w.nii.gz").is_file()
    failed = json.loads((anat / "sub-xa30_run-2_desc-original_T1w.json").read_text())
    assert failed["status"] == "failed" and "truncated" in failed["error"]
    assert file_hashes(bids) == before


def test_metrics_and_reports_for_every_output(faces_run, ds_faces):
    out = faces_run["out"]
    for record_path in sorted(out.rglob("*_desc-original_*.json")):
        record = json.loads(record_path.read_text())
        assert record["input_already_defaced"] is False, record_path.name
        assert record["iqms"]["cjv"] is not None
    for defacer in NATIVE:
        for sidecar in sorted(out.rglob(f"*_desc-{defacer}_*.json")):
            record = json.loads(sidecar.read_text())
            metrics = record["metrics"]
            assert metrics["brain_changed_voxels"] >= 0 and 0 <= metrics["face_altered_pct"] <= 100
            assert set(record["iqms"]) == {"original_masks", "recomputed_masks"}
    subjects = sorted(p.name for p in ds_faces.glob("sub-*"))
    assert sorted(p.stem for p in out.glob("sub-*.html")) == subjects


def test_facecut_removes_every_face_and_keeps_every_brain(faces_run, ds_faces):
    """The default defacer's verdict-relevant metrics on each real image (docs/defacers_default.md
    lists them): no brain voxel altered, the face and nose tip removed, no face detected."""
    records = {path.name: json.loads(path.read_text())
               for path in sorted(faces_run["out"].rglob("*_desc-facecut_*.json"))}
    assert len(records) == 10
    for name, record in records.items():
        metrics = record["metrics"]
        assert record["status"] == "ok" and "measurement_errors" not in record, name
        assert metrics["face_detected"] is False, name
        assert metrics["face_altered_pct"] >= 90, (name, metrics["face_altered_pct"])
        if record["mode"] == "direct":
            assert metrics["brain_changed_voxels"] == 0, name
            assert metrics["nose_tip_removed"] is True, name
            assert metrics["bet_dice"] > 0.95, (name, metrics["bet_dice"])


def test_group_level(faces_run, ds_faces):
    proc, _ = run_bidsapp(ds_faces, faces_run["out"], "group")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    import pandas as pd

    table = pd.read_csv(faces_run["out"] / "group_T1w.tsv", sep="\t")
    assert len(table) == 8 * len(NATIVE)
    facecut = table[table["defacer"] == "facecut"]
    assert len(facecut) == 8 and set(facecut["verdict"]) == {"pass"}, facecut["verdict"]
    assert (faces_run["out"] / "group_report.html").is_file()
    _check_identification(faces_run["out"], table)


def _check_identification(out: Path, t1w):
    """The attack's ceiling: the two T1w runs of xa30 find each other; facecut is re-identified
    nowhere; every image's row carries its rank; the rates table has one row per defacer."""
    import pandas as pd

    rates = pd.read_csv(out / "group_identification.tsv", sep="\t")
    originals = rates[(rates["suffix"] == "T1w") & (rates["defacer"] == "original")]
    assert len(originals) == 1 and int(originals["own_rank1"].iloc[0]) >= 2, rates
    assert set(rates["defacer"]) == {"original", *NATIVE}, rates["defacer"]
    facecut = rates[rates["defacer"] == "facecut"]
    assert (facecut[["own_reidentified", "box_reidentified"]] == 0).all().all(), facecut
    assert "identification.box.rank" in t1w.columns
    ranked = t1w[t1w["defacer"] == "facecut"]["identification.box.rank"]
    assert ranked.notna().sum() >= 3, ranked  # xa30 run-1 and run-2, adi (its T2w in the gallery)


def test_no_face_embedding_is_written(faces_run, ds_faces):
    """The attack keeps face descriptors in memory: none of one original's is in any file the
    participant and group levels wrote (as float32 or float64 bytes, or as text)."""
    from bidsapp import identification
    from bidsapp.bids import find_anatomical_images, load_layout
    from bidsapp.outputs import output_path

    out = faces_run["out"]
    image = next(i for i in find_anatomical_images(load_layout(ds_faces)) if i.key == "sub-xa30_run-1_T1w")
    brain = nib.load(str(output_path(out, image, desc="brain", suffix="mask", mod=True)))
    seen = identification.see_original(nib.load(str(image.path)), np.asanyarray(brain.dataobj) > 0)
    assert seen.descriptors, "no face found on the original: nothing to look for"
    needles = set()
    for descriptor in seen.descriptors.values():
        head = np.asarray(descriptor)[:4]
        needles |= {head.astype("<f4").tobytes(), head.astype("<f8").tobytes(),
                    repr(float(head[0])).encode(), f"{float(head[0]):.8f}".encode()}
    written = [p for root in (out, out.parent / "work") for p in root.rglob("*") if p.is_file()]
    assert len(written) > 100
    for path in written:
        data = path.read_bytes()
        if path.suffix == ".gz":
            import gzip
            data = gzip.decompress(data)
        assert not any(needle in data for needle in needles), path


def _keys(node, prefix=""):
    """Every key path of a record (lists are leaves); per-view keys (``face_score_y+0p-15``)
    as ``face_score_<view>``: which views a record lists depends on where its face was found."""
    import re

    out = set()
    for key, value in node.items():
        out.add(prefix + re.sub(r"y[+-]\d+p[+-]\d+", "<view>", key))
        if isinstance(value, dict):
            out |= _keys(value, f"{prefix}{key}.")
    return out


def test_the_test_fixtures_write_the_records_a_real_run_writes(faces_run, tmp_path):
    """tests/records.py (the group, report and export fixtures) against a real run's records."""
    from records import make_results

    fixture = make_results(tmp_path / "out", subjects=("01",), defacers=("quickshear",))
    real = faces_run["out"] / "sub-ixi012" / "anat"
    for fixture_name, real_name in (("sub-01_desc-quickshear_T1w.json",
                                     "sub-ixi012_desc-quickshear_T1w.json"),
                                    ("sub-01_desc-original_T1w.json",
                                     "sub-ixi012_desc-original_T1w.json")):
        made = _keys(json.loads((fixture / "sub-01" / "anat" / fixture_name).read_text()))
        measured = _keys(json.loads((real / real_name).read_text()))
        measured_only = {k for k in measured - made if k.startswith(("metrics.", "iqms."))}
        assert not made - measured, f"fixture keys no real run writes: {sorted(made - measured)}"
        assert not measured_only, f"metrics the fixtures miss: {sorted(measured_only)}"


def test_compare_runs_tells_a_reproduced_run_from_a_changed_one(faces_run, tmp_path):
    """The folder comparison (bidsapp.compare_runs) on a copy of the real run, then on changes."""
    import gzip

    from bidsapp.compare_runs import compare_outputs

    out, copy = faces_run["out"], tmp_path / "copy"
    shutil.copytree(out, copy)
    assert compare_outputs(out, copy).identical

    records = sorted(copy.glob("sub-*/anat/*_desc-facecut_*.json"))
    images = sorted(copy.glob("sub-*/anat/*_desc-facecut_T1w.nii.gz"))
    cost = json.loads(records[0].read_text())
    cost["wall_time_s"] = cost["wall_time_s"] + 100.0
    records[0].write_text(json.dumps(cost))
    # same voxels, another gzip stream (a new time stamp in the header)
    images[0].write_bytes(gzip.compress(gzip.decompress(images[0].read_bytes()), mtime=1))
    (copy / "logs" / "extra.log").write_text("a log\n")
    result = compare_outputs(out, copy)
    assert result.identical, result.lines()

    value = json.loads(records[1].read_text())
    value["altered_voxels"] += 1
    records[1].write_text(json.dumps(value))
    image = nib.load(images[1])
    data = np.asanyarray(image.dataobj).copy()
    data.flat[0] += 1
    nib.save(nib.Nifti1Image(data, image.affine, image.header), images[1])
    figure = sorted(copy.glob("sub-*/figures/*.png"))[0]
    figure.unlink()
    result = compare_outputs(out, copy)
    rel = {p.relative_to(copy).as_posix() for p in (records[1], images[1])}
    assert set(result.different) == rel
    assert result.only_first == [figure.relative_to(copy).as_posix()]
    assert not result.identical
