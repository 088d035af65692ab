"""Group level: aggregation, verdicts, summary, recommendation, ratings, and its edge cases.

``records.make_results`` writes an ``output_dir`` with bidsapp's writers and metrics measured on
a synthetic head; the report tests reuse it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from records import make_results, measured

from bidsapp import group, results, verdicts
from bidsapp.settings import Settings


def _write_json(path: Path, payload) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1))


def settings_for(root: Path, participants=()) -> Settings:
    return Settings(bids_dir=root, output_dir=root, analysis_level="group",
                    work_dir=root.parent / "work", participant_labels=tuple(participants))


# --- reading ---

def test_collect_separates_inputs_results_and_ignores_masks(tmp_path):
    make_results(tmp_path)
    _write_json(tmp_path / "sub-01/anat/sub-01_desc-quickshear_T1w_iqms.json", {"x": 1})
    _write_json(tmp_path / "sub-01/anat/sub-01_mod-T1w_desc-brain_mask.json", {"Type": "Brain"})
    found = results.collect(tmp_path)
    assert sorted((r.image, r.defacer) for r in found.results) == [
        ("sub-01_T1w", "facemask"), ("sub-01_T1w", "quickshear"),
        ("sub-02_T1w", "facemask"), ("sub-02_T1w", "quickshear")]
    assert [r.image for r in found.inputs] == ["sub-01_T1w", "sub-02_T1w"]
    assert found.problems == []


def test_aggregate_flattens_every_metric_with_sessions(tmp_path):
    make_results(tmp_path, session="a", suffixes=("T1w", "T2w"))
    table = results.aggregate(tmp_path)
    assert len(table) == 8
    assert set(table["session"]) == {"a"}
    assert set(table["image"]) == {"sub-01_ses-a_T1w", "sub-01_ses-a_T2w", "sub-02_ses-a_T1w",
                                   "sub-02_ses-a_T2w"}
    for column in ("metrics.brain_changed_voxels", "metrics.face_altered_pct",
                   "metrics.face_detected", "iqms.original_masks.delta.cnr",
                   "iqms.recomputed_masks.delta.efc", "metrics.bet_dice", "timings_s.face",
                   "wall_time_s", "peak_rss_mb", "parameters.buffer_voxels", "guard.applied"):
        assert column in table, column
    assert "Sources" not in table and "Description" not in table
    assert (table["face_removed_pct"] == table["metrics.face_altered_pct"]).all()
    assert (table["face_removed_pct"] > verdicts.FACE_REMOVED_MIN_PCT).all()
    assert (table["brain_voxels_altered"] == 0).all()
    assert (table["verdict"] == "pass").all()


def test_unreadable_record_is_a_problem_not_a_crash(tmp_path):
    make_results(tmp_path)
    (tmp_path / "sub-01/anat/sub-01_desc-facemask_T1w.json").write_text("{not json")
    found = results.collect(tmp_path)
    assert len(found.results) == 3
    assert "sub-01_desc-facemask_T1w.json: unreadable record" in found.problems[0]


# --- headlines and verdicts ---

def test_headlines_come_from_the_measured_record():
    """The layout bidsapp.metrics.measure writes: metrics.*, iqms.<mode>.delta.*, timings_s.*"""
    entry, _, altered = measured(7, 0.92)
    record = {"status": "ok", "wall_time_s": 3.0, **json.loads(entry)}
    table = results.add_verdicts(pd.DataFrame([results.flatten(record)]))
    row = table.iloc[0]
    assert row["brain_voxels_altered"] == 7
    assert row["face_removed_pct"] == record["metrics"]["face_altered_pct"] > 80
    assert row["face_detected"] == 0
    assert row["verdict"] == "fail" and "7 brain voxel(s) altered" in row["verdict_reason"]
    assert "iqms.original_masks.delta.cnr" in results.iqm_difference_columns(table)
    assert "iqms.recomputed_masks.delta.cnr" in results.iqm_difference_columns(table)
    metrics = results.metric_columns(table)
    assert "metrics.nose_tip_removed" in metrics and "timings_s.face" not in metrics


def test_a_record_without_metrics_has_no_headlines():
    table = results.add_verdicts(pd.DataFrame([results.flatten({"status": "ok", "other": 1})]))
    assert math.isnan(table["face_removed_pct"].iloc[0])
    assert table["verdict"].iloc[0] == "n/a"


def test_verdicts():
    brain, face = "metrics.brain_changed_voxels", "metrics.face_altered_pct"
    table = pd.DataFrame([
        {"status": "ok", brain: 0, face: 95.0},
        {"status": "ok", brain: 3, face: 95.0},
        {"status": "ok", brain: 0, face: 30.0},
        {"status": "ok", brain: 0},
        {"status": "ok", brain: 9},
        {"status": "failed"},
    ])
    out = results.add_verdicts(table)
    assert list(out["verdict"]) == ["pass", "fail", "fail", "n/a", "fail", "fail"]
    assert "3 brain voxel(s) altered" in out["verdict_reason"][1]
    assert f"30% of the face removed (< {verdicts.FACE_REMOVED_MIN_PCT:g}%)" in out["verdict_reason"][2]
    assert out["verdict_reason"][3] == "metric(s) missing: face removed"


def test_threshold_is_a_parameter():
    table = pd.DataFrame([{"status": "ok", "metrics.brain_changed_voxels": 0,
                           "metrics.face_altered_pct": 35.0}])
    assert results.add_verdicts(table)["verdict"][0] == "fail"
    assert results.add_verdicts(table, threshold=30)["verdict"][0] == "pass"


# --- summary and recommendation ---

def test_summary_and_recommendation(tmp_path):
    make_results(tmp_path, subjects=("01", "02", "03"),
                 defacers=("quickshear", "deepdefacer", "facemask"),
                 values={("02", "quickshear"): (0, 0.25), ("03", "deepdefacer"): (40, 0.97)},
                 fail=[("01", "facemask")])
    table = results.aggregate(tmp_path)
    summary = group.summarise(table)
    rows = summary.set_index("defacer")
    low = table[(table["subject"] == "02") & (table["defacer"] == "quickshear")]
    assert list(summary["defacer"]) == ["quickshear", "deepdefacer", "facemask"]  # registry order
    assert rows.loc["quickshear", "n_pass"] == 2 and rows.loc["quickshear", "n_fail"] == 1
    assert rows.loc["quickshear", "pass_rate"] == pytest.approx(2 / 3)
    assert rows.loc["quickshear", "face_removed_pct_min"] == low["face_removed_pct"].iloc[0] < 40
    assert rows.loc["deepdefacer", "n_brain_altered"] == 1
    assert rows.loc["deepdefacer", "brain_voxels_altered_max"] == 40
    assert rows.loc["facemask", "n_failed"] == 1 and rows.loc["facemask", "n_images"] == 3
    assert rows.loc["facemask", "wall_time_s_median"] == pytest.approx(4.1)
    cnr = "iqms.original_masks.delta.cnr"
    assert rows.loc["deepdefacer", f"{cnr}_median"] == pytest.approx(table[cnr].median())
    assert not rows["recommended"].any()
    assert group.recommend(summary) == {"T1w": [], "all": []}


def test_recommendation_needs_every_image(tmp_path):
    make_results(tmp_path, subjects=("01", "02"), defacers=("quickshear", "facemask"))
    make_results(tmp_path, subjects=("03",), defacers=("quickshear",))  # facemask not run
    summary = group.summarise(results.aggregate(tmp_path))
    assert group.recommend(summary) == {"T1w": ["quickshear"], "all": ["quickshear"]}
    facemask = summary.set_index("defacer").loc["facemask"]
    assert facemask["n_images"] == 2 and facemask["n_images_of_suffix"] == 3


def test_recommendation_per_suffix(tmp_path):
    make_results(tmp_path, suffixes=("T1w", "FLAIR"),
                 values={("01", "facemask", "T1w"): (0, 0.1)})
    rec = group.recommend(group.summarise(results.aggregate(tmp_path)))
    assert rec == {"FLAIR": ["quickshear", "facemask"], "T1w": ["quickshear"],
                   "all": ["quickshear"]}


def test_summary_without_metrics_recommends_nothing(tmp_path):
    make_results(tmp_path, metrics=False)
    table = results.aggregate(tmp_path)
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
    table, unmatched = group.merge_ratings(results.aggregate(tmp_path), ratings)
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
    assert "iqms.original_masks.delta.efc" in t1w and "metrics.face_detected" in t1w
    assert set(t1w["metrics.face_detected"].dropna()) == {False}
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
    from bidsapp.errors import UsageError

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
    from bidsapp.cli.main import main

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


# --- the group results the participant reports read ---

def attacked(root: Path, probes: dict[tuple[str, str], dict]) -> pd.DataFrame:
    """The attack's table (:func:`bidsapp.identification.attack_table`) on descriptors chosen
    here: every original of ``root`` in the gallery at its own point, and the given probes
    ((image, defacer) -> mode -> view -> descriptor)."""
    import numpy as np

    from bidsapp.identification import GalleryImage, Probe, attack_table

    found = results.collect(root)
    gallery = [GalleryImage(r.image, r.subject, {"f": np.array([float(i)])})
               for i, r in enumerate(sorted(found.inputs, key=lambda r: r.image))]
    subjects = {r.image: (r.subject, r.suffix) for r in found.inputs}
    return attack_table(gallery, [
        Probe(image, subjects[image][0], subjects[image][1], defacer,
              {mode: {v: np.asarray(d, dtype=float) for v, d in views.items()}
               for mode, views in descriptors.items()})
        for (image, defacer), descriptors in probes.items()])


def two_participants(root: Path) -> Path:
    """sub-01 with a T1w and a T2w (each the other's target), sub-02 with a T1w only."""
    make_results(root, subjects=("01",), suffixes=("T1w", "T2w"))
    make_results(root, subjects=("02",))
    return root


def test_read_group_results_reads_identification_and_n_a(tmp_path):
    root = two_participants(tmp_path / "out")
    # gallery: sub-01_T1w at 0, sub-01_T2w at 1, sub-02_T1w at 2
    table = attacked(root, {("sub-01_T1w", "quickshear"): {"own": {"f": [1.05]}, "box": {}},
                            ("sub-02_T1w", "quickshear"): {"own": {"f": [2.0]},
                                                           "box": {"f": [2.0]}}})
    group.write_group_outputs(root, results.collect(root), identification=table)
    found = results.read_group_results(root)
    hit = found[("sub-01_T1w", "quickshear")]
    assert hit["verdict"] == "fail" and "re-identified" in hit["reason"]
    own = hit["identification"]["own"]
    assert own["rank"] == 1 and own["n_candidates"] == 2 and own["reidentified"] is True
    assert own["distance"] == pytest.approx(0.05) and own["same_scan_distance"] == \
        pytest.approx(1.05)
    box = hit["identification"]["box"]  # no descriptor: "n/a" in the table, None here
    assert box["rank"] is None and box["distance"] is None and box["reidentified"] is None
    assert hit["identification"]["reidentified"] is True
    alone = found[("sub-02_T1w", "quickshear")]["identification"]["own"]
    assert alone["rank"] is None and alone["same_scan_distance"] == 0  # no other image
    assert found[("sub-01_T1w", "facemask")]["identification"] is None  # not attacked
    assert found[("sub-01_T1w", "facemask")]["verdict"] == "pass"
    assert results.read_verdicts(root) == {k: (v["verdict"], v["reason"])
                                           for k, v in found.items()}
    assert len(found) == 6  # 3 images x 2 defacers; the rates table is not read as results


def test_run_group_rewrites_the_participant_reports(tmp_path):
    from bidsapp.reports.participant import write_participant_report

    root = make_results(tmp_path / "out", subjects=("01", "02"))
    before = write_participant_report(root, "01", figures=False).read_text()
    assert "re-identification not yet checked" in before
    settings = Settings(bids_dir=tmp_path / "out-bids", output_dir=root,
                        analysis_level="group", work_dir=tmp_path / "work")
    assert group.run_group(settings) == 0
    assert (root / "group_identification.tsv").is_file()  # the attack ran
    html = (root / "sub-01.html").read_text()
    assert "Verdict of the group level, re-identification attack included." in html
    assert "no other image of this participant" in html
    assert "same-scan distance (upper bound)" in html


def test_run_group_reports_a_report_it_cannot_rewrite(tmp_path, caplog):
    root = make_results(tmp_path)
    (tmp_path / "sub-02.html").mkdir()  # not writable as a file
    assert group.run_group(settings_for(tmp_path)) == 1
    assert "sub-02.html: the report was not rewritten" in caplog.text
    assert (tmp_path / "sub-01.html").is_file()
