"""The group level lists the dataset's participants that have no result (a cluster task that
failed or was killed) instead of silently comparing fewer images."""

from __future__ import annotations

import shutil

import pandas as pd

from records import make_results

from bidsapp import group, results
from bidsapp.settings import Settings


def test_participants_without_results_are_listed_in_the_tsv_and_the_report(tmp_path):
    out = make_results(tmp_path / "out", subjects=("01", "02", "03", "04"),
                       fail=[("02", "quickshear"), ("02", "facemask")])
    bids = tmp_path / "out-bids"
    shutil.rmtree(out / "sub-03")                       # a task killed before it wrote anything
    for record in (out / "sub-04" / "anat").glob("sub-04_desc-quickshear_*"):
        record.unlink()                                 # killed after the input, mid-defacers
    for record in (out / "sub-04" / "anat").glob("sub-04_desc-facemask_*"):
        record.unlink()
    settings = Settings(bids_dir=bids, output_dir=out, analysis_level="group",
                        work_dir=tmp_path / "work", skip_identification=True)

    group.run_group(settings)

    missing = pd.read_csv(out / results.MISSING_TABLE, sep="\t")
    assert list(missing["participant_id"]) == ["sub-02", "sub-03", "sub-04"]
    reasons = dict(zip(missing["participant_id"], missing["reason"]))
    assert reasons["sub-02"].startswith("every defacer failed")
    assert reasons["sub-03"].startswith("no record at all")
    assert reasons["sub-04"].startswith("no defacer result")
    html = (out / "group_report.html").read_text()
    assert "3 participant(s) of the dataset have no" in html
    assert "Participants without results (3)" in html and results.MISSING_TABLE in html
    assert set(pd.read_csv(out / "group_T1w.tsv", sep="\t", dtype=str)["subject"]) == {"01", "02"}


def test_nothing_is_missing_when_every_participant_ran_or_was_not_asked_for(tmp_path):
    out = make_results(tmp_path / "out", subjects=("01", "02"))
    found = results.collect(out)
    assert group.missing_participants(tmp_path / "out-bids", found).empty
    shutil.rmtree(out / "sub-02")
    found = results.collect(out, ["01"])
    assert group.missing_participants(tmp_path / "out-bids", found, ["01"]).empty
    assert group.missing_participants(tmp_path / "absent", found).empty
