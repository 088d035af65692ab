"""The methods boilerplate (``logs/CITATION.*``): written by a real participant run, from its
workflow's descriptions, naming exactly what ran; the BibTeX parses; the group report links it."""

from __future__ import annotations

import re
import shutil

import pytest
from edgecases import explain, run_bidsapp
from records import make_results

from bidsapp import boilerplate, group
from bidsapp.defacers import availability

pybtex = pytest.importorskip("pybtex.database", reason="pybtex (test extra) parses the BibTeX")


@pytest.fixture(scope="module")
def citation_run(ds_faces, tmp_path_factory):
    """One cheap participant run: one small T1w, quickshear and facecut, no metrics."""
    root = tmp_path_factory.mktemp("citation")
    bids = root / "bids"
    shutil.copytree(ds_faces / "sub-ixi012", bids / "sub-ixi012")
    shutil.copy(ds_faces / "dataset_description.json", bids)
    proc, _ = run_bidsapp(bids, root / "out", "participant", "-w", root / "work",
                          "--defacers", "quickshear", "facecut", "--skip-metrics")
    assert proc.returncode == 0, explain(proc)
    return root / "out" / "logs"


def test_participant_run_writes_the_boilerplate(citation_run):
    markdown = (citation_run / "CITATION.md").read_text()
    from bidsapp import __version__

    assert f"*bidsapp* {__version__}" in markdown
    ran = {m.group(1): m.group(2) for m in re.finditer(r"\(`(\w+)`, version ([^)]+)\)", markdown)}
    assert ran == {"quickshear": availability("quickshear").version,
                   "facecut": availability("facecut").version}
    assert "*deepbet* " in markdown and "[@deepbet]" in markdown
    assert "[@quickshear]" in markdown and "[@pydeface; @ants]" in markdown
    assert "tpm_overlap" not in markdown, "--skip-metrics: no metrics paragraph"
    html = (citation_run / "CITATION.html").read_text()
    assert "[@" not in html and '<li id="ref-quickshear">' in html


def test_the_bibtex_parses_and_holds_what_is_cited(citation_run):
    text = (citation_run / "CITATION.bib").read_text()
    data = pybtex.parse_string(text, "bibtex")  # strict: a duplicate key raises
    keys = boilerplate.cited((citation_run / "CITATION.md").read_text())
    assert list(data.entries) == keys and len(keys) == text.count("\n@") + 1
    assert len(set(keys)) == len(keys)


def test_packaged_references_parse_and_cover_the_registry():
    from bidsapp.defacers import REGISTRY
    from bidsapp.reports import asset

    data = pybtex.parse_string(asset("citations.bib"), "bibtex")
    assert set(data.entries) == set(boilerplate.bibliography())
    assert set(boilerplate.DEFACER_REFERENCES) == set(REGISTRY)
    cited = {k for keys in boilerplate.DEFACER_REFERENCES.values() for k in keys}
    assert cited <= set(data.entries)


def test_metrics_paragraph_names_the_template():
    text = boilerplate.describe_participant(["quickshear"], metrics=True, carried=True)
    assert "[@mriqc; @mortamet]" in text and "rigidly" in text
    assert "nilearn" in text or "TemplateFlow" in text


def test_group_report_links_the_boilerplate(tmp_path):
    import dataclasses

    from test_group import settings_for

    from bidsapp.reports import citation_link

    make_results(tmp_path, subjects=("01",))
    assert citation_link(tmp_path) is None
    (tmp_path / "logs").mkdir(exist_ok=True)
    (tmp_path / "logs" / "CITATION.html").write_text("<p>methods</p>")
    assert citation_link(tmp_path) == "logs/CITATION.html"
    settings = dataclasses.replace(settings_for(tmp_path), skip_identification=True)
    assert group.run_group(settings) == 0
    assert '<a href="logs/CITATION.html">' in (tmp_path / "group_report.html").read_text()
