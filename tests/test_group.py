"""Group level: aggregation, verdicts, summary, recommendation, ratings, and its edge cases.

:func:`make_results` builds a synthetic ``output_dir`` as the participant level writes it
(records, and optionally small synthetic head images); the report tests reuse it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bidsapp import group
from bidsapp.settings import Settings

SHAPE = (48, 56, 48)
ZOOM = 4.0


def synthetic_head(shape=SHAPE, zoom=ZOOM) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, brain mask, face-region mask) of an ellipsoid head with a nose, RAS voxels."""
    grid = np.stack(np.meshgrid(*[(np.arange(n) - n / 2 + 0.5) * zoom for n in shape],
                                indexing="ij"))
    x, y, z = grid
    head = (x / 70) ** 2 + (y / 88) ** 2 + (z / 92) ** 2 <= 1
    brain = (x / 55) ** 2 + ((y + 8) / 70) ** 2 + ((z - 22) / 55) ** 2 <= 1
    nose = (np.abs(x) <= 10) & (y > 80) & (y < 100) & (z > -30) & (z < 0) & \
        ((y - 80) < (0 - z) * 0.7)
    image = np.where(head | nose, 120.0, 0.0)
    image[brain] = 300.0
    image += np.random.default_rng(1).normal(0, 3, shape).clip(0)
    face = (y > 30) & (z < 10) & (z > -60)
    return image.astype(np.float32), brain, face & (head | nose) & ~brain


def _affine(zoom=ZOOM, shape=SHAPE) -> np.ndarray:
    affine = np.diag([zoom, zoom, zoom, 1.0])
    affine[:3, 3] = [-(n / 2 - 0.5) * zoom for n in shape]
    return affine


def _write_json(path: Path, payload) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1))


def make_results(root: Path, subjects=("01", "02"), defacers=("quickshear", "facemask"), *,
                 suffixes=("T1w",), session: str | None = None, images: bool = False,
                 fail=(), values=None, metrics: bool = True, failed_inputs=()) -> Path:
    """A synthetic participant-level output folder.

    ``fail`` lists (subject, defacer) pairs whose defacer failed; ``values`` maps
    (subject, defacer) or (subject, defacer, suffix) to (brain voxels altered, face removed
    fraction); the default is (0, 0.92): a pass. ``failed_inputs`` lists subjects whose input check failed.
    """
    import nibabel as nib

    root = Path(root)
    _write_json(root / "dataset_description.json", {
        "Name": "synthetic", "BIDSVersion": "1.10.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "bidsapp", "Version": "0.0-test"}]})
    values = values or {}
    data, brain, face = synthetic_head() if images else (None, None, None)
    for index, subject in enumerate(subjects):
        folder = root / f"sub-{subject}" / (f"ses-{session}/anat" if session else "anat")
        entities = f"sub-{subject}" + (f"_ses-{session}" if session else "")
        for suffix in suffixes:
            key = f"{entities}_{suffix}"
            source = {"Sources": [f"bids:raw:sub-{subject}/anat/{key}.nii.gz"]}
            if subject in failed_inputs:
                _write_json(folder / f"{entities}_desc-original_{suffix}.json",
                            {**source, "status": "failed",
                             "error": f"{key}.nii.gz: every voxel is zero"})
                continue
            record = {**source, "status": "ok", "error": None, "shape": list(SHAPE),
                      "zooms_mm": [ZOOM] * 3, "orientation": "RAS", "mode": "direct",
                      "reference_t1w": None}
            if images:
                mask = folder / f"{entities}_mod-{suffix}_desc-brain_mask.nii.gz"
                folder.mkdir(parents=True, exist_ok=True)
                nib.save(nib.Nifti1Image(brain.astype(np.uint8), _affine()), mask)
                record["brain_mask"] = str(mask.relative_to(root))
            _write_json(folder / f"{entities}_desc-original_{suffix}.json", record)
            for rank, name in enumerate(defacers):
                stem = f"{entities}_desc-{name}_{suffix}"
                log = f"logs/sub-{subject}/{key}_desc-{name}.log"
                (root / log).parent.mkdir(parents=True, exist_ok=True)
                (root / log).write_text(f"{name} log\n")
                result = {"Description": f"{key} defaced with {name}", **source,
                          "defacer": name, "version": "1.0", "title": name.title(),
                          "kind": "native", "mode": "direct",
                          "parameters": {"buffer_voxels": 10}, "guard": {"applied": False},
                          "wall_time_s": 2.0 + rank + 0.1 * index,
                          "peak_rss_mb": 100.0 * (rank + 1) + index,
                          "cpu_time_s": 1.5 + rank, "log": log}
                if (subject, name) in fail:
                    result.update(status="failed", error=f"{name} crashed on {key}")
                else:
                    brain_voxels, removed = values.get(
                        (subject, name, suffix), values.get((subject, name), (0, 0.92)))
                    result.update(status="ok", error=None, altered_voxels=1000 + brain_voxels,
                                  altered_ml=64.0)
                    if metrics:
                        result.update(
                            brain={"altered_voxels": brain_voxels,
                                   "altered_pct": brain_voxels / 5000},
                            face={"removed_fraction": removed, "nose_tip_removed": True,
                                  "eyes_altered_pct": 50.0},
                            detection={"face_detected": removed < 0.5, "score": 100.0},
                            downstream={"bet_dice": 0.99},
                            iqm={"original": {"cnr": 3.0, "efc": 0.5},
                                 "diff": {"cnr": 0.1 * rank, "efc": -0.01 * (rank + 1)}})
                    if images:
                        defaced = data.copy()
                        cut = face if removed >= 0.5 else np.zeros_like(face)
                        defaced[cut] = 0
                        nib.save(nib.Nifti1Image(defaced, _affine()),
                                 folder / f"{stem}.nii.gz")
                        nib.save(nib.Nifti1Image(cut.astype(np.uint8), _affine()),
                                 folder / f"{entities}_mod-{suffix}_desc-{name}_defacemask.nii.gz")
                _write_json(folder / f"{stem}.json", result)
    return root


def settings_for(root: Path, participants=()) -> Settings:
    return Settings(bids_dir=root, output_dir=root, analysis_level="group",
                    work_dir=root.parent / "work", participant_labels=tuple(participants))


# --- reading ---

def test_collect_separates_inputs_results_and_ignores_masks(tmp_path):
    make_results(tmp_path, images=True)
    _write_json(tmp_path / "sub-01/anat/sub-01_desc-quickshear_T1w_iqms.json", {"x": 1})
    _write_json(tmp_path / "sub-01/anat/sub-01_mod-T1w_desc-brain_mask.json", {"Type": "Brain"})
    found = group.collect(tmp_path)
    assert sorted((r.image, r.defacer) for r in found.results) == [
        ("sub-01_T1w", "facemask"), ("sub-01_T1w", "quickshear"),
        ("sub-02_T1w", "facemask"), ("sub-02_T1w", "quickshear")]
    assert [r.image for r in found.inputs] == ["sub-01_T1w", "sub-02_T1w"]
    assert found.problems == []


def test_aggregate_flattens_every_metric_with_sessions(tmp_path):
    make_results(tmp_path, session="a", suffixes=("T1w", "T2w"))
    table = group.aggregate(tmp_path)
    assert len(table) == 8
    assert set(table["session"]) == {"a"}
    assert set(table["image"]) == {"sub-01_ses-a_T1w", "sub-01_ses-a_T2w", "sub-02_ses-a_T1w",
                                   "sub-02_ses-a_T2w"}
    for column in ("brain.altered_voxels", "face.removed_fraction", "detection.face_detected",
                   "iqm.diff.cnr", "downstream.bet_dice", "wall_time_s", "peak_rss_mb",
                   "parameters.buffer_voxels", "guard.applied"):
        assert column in table, column
    assert "Sources" not in table and "Description" not in table
    assert (table["face_removed_pct"] == 92.0).all()
    assert (table["verdict"] == "pass").all()


def test_unreadable_record_is_a_problem_not_a_crash(tmp_path):
    make_results(tmp_path)
    (tmp_path / "sub-01/anat/sub-01_desc-facemask_T1w.json").write_text("{not json")
    found = group.collect(tmp_path)
    assert len(found.results) == 3
    assert "sub-01_desc-facemask_T1w.json: unreadable record" in found.problems[0]


# --- headlines and verdicts ---

@pytest.mark.parametrize("record, expected", [
    ({"face": {"removed_fraction": 0.9}}, 90.0),
    ({"face": {"face_altered_pct": 70.0}}, 70.0),
    ({"metrics": {"face": {"removed_fraction": 0.5}}}, 50.0),
    ({"something": 1}, None),
])
def test_headline_keys_are_found_under_several_names(record, expected):
    table = group.add_headlines(pd.DataFrame([group.flatten({"status": "ok", **record})]))
    value = table["face_removed_pct"].iloc[0]
    assert (math.isnan(value) if expected is None else value == pytest.approx(expected))


def test_the_measured_record_layout_is_understood():
    """The layout bidsapp.metrics.measure writes: metrics.*, iqms.<mode>.delta.*, timings_s.*"""
    record = {"status": "ok", "wall_time_s": 3.0,
              "metrics": {"brain_changed_voxels": 0, "margin_changed_voxels": 4,
                          "face_altered_pct": 91.0, "face_detected": False,
                          "face_detected_front": False, "nose_tip_removed": True},
              "iqms": {"original_masks": {"iqms": {"cnr": 3.1}, "delta": {"cnr": 0.1}},
                       "recomputed_masks": {"iqms": {"cnr": 3.3}, "delta": {"cnr": 0.3}}},
              "timings_s": {"face": 1.2}}
    table = group.add_verdicts(pd.DataFrame([group.flatten(record)]))
    row = table.iloc[0]
    assert (row["brain_voxels_altered"], row["face_removed_pct"], row["face_detected"]) == \
        (0, 91.0, 0)
    assert row["verdict"] == "pass"
    assert group.iqm_difference_columns(table) == ["iqms.original_masks.delta.cnr",
                                                   "iqms.recomputed_masks.delta.cnr"]
    metrics = group.metric_columns(table)
    assert "metrics.nose_tip_removed" in metrics and "timings_s.face" not in metrics


def test_verdicts():
    table = pd.DataFrame([
        {"status": "ok", "brain.altered_voxels": 0, "face.removed_fraction": 0.95},
        {"status": "ok", "brain.altered_voxels": 3, "face.removed_fraction": 0.95},
        {"status": "ok", "brain.altered_voxels": 0, "face.removed_fraction": 0.3},
        {"status": "ok", "brain.altered_voxels": 0},
        {"status": "ok", "brain.altered_voxels": 9},
        {"status": "failed"},
    ])
    out = group.add_verdicts(table)
    assert list(out["verdict"]) == ["pass", "fail", "fail", "n/a", "fail", "fail"]
    assert "3 brain voxel(s) altered" in out["verdict_reason"][1]
    assert f"30% of the face removed (< {group.FACE_REMOVED_MIN_PCT:g}%)" in out["verdict_reason"][2]
    assert out["verdict_reason"][3] == "metric(s) missing: face removed"


def test_threshold_is_a_parameter():
    table = pd.DataFrame([{"status": "ok", "brain.altered_voxels": 0,
                           "face.removed_fraction": 0.4}])
    assert group.add_verdicts(table)["verdict"][0] == "fail"
    assert group.add_verdicts(table, threshold=30)["verdict"][0] == "pass"


# --- summary and recommendation ---

def test_summary_and_recommendation(tmp_path):
    make_results(tmp_path, subjects=("01", "02", "03"),
                 defacers=("quickshear", "deepdefacer", "facemask"),
                 values={("02", "quickshear"): (0, 0.55), ("03", "deepdefacer"): (40, 0.97)},
                 fail=[("01", "facemask")])
    summary = group.summarise(group.aggregate(tmp_path))
    rows = summary.set_index("defacer")
    assert list(summary["defacer"]) == ["quickshear", "deepdefacer", "facemask"]  # registry order
    assert rows.loc["quickshear", "n_pass"] == 2 and rows.loc["quickshear", "n_fail"] == 1
    assert rows.loc["quickshear", "pass_rate"] == pytest.approx(2 / 3)
    assert rows.loc["quickshear", "face_removed_pct_min"] == pytest.approx(55.0)
    assert rows.loc["deepdefacer", "n_brain_altered"] == 1
    assert rows.loc["deepdefacer", "brain_voxels_altered_max"] == 40
    assert rows.loc["facemask", "n_failed"] == 1 and rows.loc["facemask", "n_images"] == 3
    assert rows.loc["facemask", "wall_time_s_median"] == pytest.approx(4.1)
    assert rows.loc["deepdefacer", "iqm.diff.cnr_median"] == pytest.approx(0.1)
    assert not rows["recommended"].any()
    assert group.recommend(summary) == {"T1w": [], "all": []}


def test_recommendation_needs_every_image(tmp_path):
    make_results(tmp_path, subjects=("01", "02"), defacers=("quickshear", "facemask"))
    make_results(tmp_path, subjects=("03",), defacers=("quickshear",))  # facemask not run
    summary = group.summarise(group.aggregate(tmp_path))
    assert group.recommend(summary) == {"T1w": ["quickshear"], "all": ["quickshear"]}
    facemask = summary.set_index("defacer").loc["facemask"]
    assert facemask["n_images"] == 2 and facemask["n_images_of_suffix"] == 3


def test_recommendation_per_suffix(tmp_path):
    make_results(tmp_path, suffixes=("T1w", "FLAIR"),
                 values={("01", "facemask", "T1w"): (0, 0.1)})
    rec = group.recommend(group.summarise(group.aggregate(tmp_path)))
    assert rec == {"FLAIR": ["quickshear", "facemask"], "T1w": ["quickshear"],
                   "all": ["quickshear"]}


def test_summary_without_metrics_recommends_nothing(tmp_path):
    make_results(tmp_path, metrics=False)
    table = group.aggregate(tmp_path)
    assert (table["verdict"] == "n/a").all()
    summary = group.summarise(table)
    assert (summary["n_unknown"] == 2).all() and not summary["recommended"].any()


# --- ratings ---

def test_ratings_json_and_tsv_are_merged_latest_wins(tmp_path):
    make_results(tmp_path)
    folder = tmp_path / "ratings"
    _write_json(folder / "a.json", {"format": "bidsapp-ratings", "version": 1, "rater": "AB",
                                    "ratings": [
        {"image": "sub-01_T1w", "defacer": "facemask", "rating": "pass", "notes": "",
         "time": "2026-01-01T10:00:00Z"},
        {"image": "sub-09_T1w", "defacer": "facemask", "rating": "pass",
         "time": "2026-01-01T10:00:00Z"}]})
    (folder / "b.tsv").write_text("image\tdefacer\trating\tnotes\trater\ttime\n"
                                  "sub-01_T1w\tfacemask\tbrain-cut\tcerebellum\tCD\t"
                                  "2026-02-01T10:00:00Z\n")
    ratings, problems = group.read_ratings(folder)
    assert problems == [] and len(ratings) == 3
    assert set(ratings["rater"]) == {"AB", "CD"}
    table, unmatched = group.merge_ratings(group.aggregate(tmp_path), ratings)
    assert unmatched == 1
    row = table[(table["image"] == "sub-01_T1w") & (table["defacer"] == "facemask")].iloc[0]
    assert (row["rating"], row["rating_notes"], row["rater"]) == ("brain-cut", "cerebellum",
                                                                  "CD")
    other = table[(table["image"] == "sub-02_T1w")]
    assert other["rating"].isna().all()
    summary = group.summarise(table).set_index("defacer")
    assert summary.loc["facemask", "n_rated_problem"] == 1
    assert not summary.loc["facemask", "recommended"]
    assert summary.loc["quickshear", "recommended"]


def test_bad_ratings_file_is_reported(tmp_path):
    (tmp_path / "ratings").mkdir()
    (tmp_path / "ratings" / "x.json").write_text('{"ratings": [{"rating": "pass"}]}')
    ratings, problems = group.read_ratings(tmp_path / "ratings")
    assert ratings.empty and "x.json: not a bidsapp ratings file" in problems[0]


# --- the group level ---

def test_run_group_writes_tables_summary_and_report(tmp_path):
    make_results(tmp_path, suffixes=("T1w", "T2w"), fail=[("02", "facemask")],
                 failed_inputs=("03",), subjects=("01", "02", "03"))
    assert group.run_group(settings_for(tmp_path)) == 0
    t1w = pd.read_csv(tmp_path / "group_T1w.tsv", sep="\t", na_values="n/a",
                      keep_default_na=False)
    assert len(t1w) == 4
    assert list(t1w.columns[:8]) == ["subject", "image", "suffix", "defacer", "status",
                                     "verdict", "verdict_reason", "brain_voxels_altered"]
    assert "session" not in t1w  # all empty: dropped
    assert set(t1w["verdict"]) == {"pass", "fail"}
    assert "iqm.diff.efc" in t1w and "detection.face_detected" in t1w
    assert set(t1w["detection.face_detected"].dropna()) == {False}
    assert (tmp_path / "group_T2w.tsv").is_file()
    summary = pd.read_csv(tmp_path / "group_summary.tsv", sep="\t")
    assert len(summary) == 4
    html = (tmp_path / "group_report.html").read_text()
    assert "facemask crashed on sub-02_T1w" in html
    assert "sub-03_T1w (input)" in html and "every voxel is zero" in html
    assert "Recommended on every image:</strong> quickshear" in html


def test_run_group_filters_participants_and_tolerates_missing_ones(tmp_path, caplog):
    make_results(tmp_path, subjects=("01", "02"))
    assert group.run_group(settings_for(tmp_path, participants=("01", "07"))) == 0
    table = pd.read_csv(tmp_path / "group_T1w.tsv", sep="\t")
    assert set(table["subject"].astype(str).str.zfill(2)) == {"01"}
    assert "participant 07 has no results" in caplog.text


def test_run_group_with_different_defacer_sets(tmp_path):
    make_results(tmp_path, subjects=("01",), defacers=("quickshear", "facemask"))
    make_results(tmp_path, subjects=("02",), defacers=("deepdefacer",))
    assert group.run_group(settings_for(tmp_path)) == 0
    summary = pd.read_csv(tmp_path / "group_summary.tsv", sep="\t").set_index("defacer")
    assert summary["n_images"].to_dict() == {"quickshear": 1, "deepdefacer": 1, "facemask": 1}
    assert not summary["recommended"].any()
    assert "not run" in (tmp_path / "group_report.html").read_text()


def test_run_group_on_an_empty_output_dir_is_a_usage_error(tmp_path):
    from bidsapp.cli.run import UsageError

    with pytest.raises(UsageError, match="no participant results in .*run the participant level"):
        group.run_group(settings_for(tmp_path))
    with pytest.raises(UsageError, match="does not exist"):
        group.run_group(settings_for(tmp_path / "nowhere"))


def test_run_group_returns_1_when_a_file_is_unreadable(tmp_path):
    make_results(tmp_path)
    (tmp_path / "ratings").mkdir()
    (tmp_path / "ratings" / "broken.json").write_text("nope")
    assert group.run_group(settings_for(tmp_path)) == 1
    assert "broken.json" in (tmp_path / "group_report.html").read_text()


def test_cli_group_level_exit_codes(tmp_path, capsys):
    from bidsapp.cli.run import main

    bids = tmp_path / "bids"
    bids.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    assert main([str(bids), str(out), "group"]) == 2
    assert "no participant results" in capsys.readouterr().err
    make_results(out)
    assert main([str(bids), str(out), "group"]) == 0
    assert (out / "group_report.html").is_file()


def test_run_group_when_every_input_failed(tmp_path):
    make_results(tmp_path, subjects=("01",), failed_inputs=("01",))
    assert group.run_group(settings_for(tmp_path)) == 0
    assert not list(tmp_path.glob("group_T1w.tsv"))
    html = (tmp_path / "group_report.html").read_text()
    assert "sub-01_T1w (input)" in html and "No defacer passed on every image" in html
