"""The group level: collect the records, write the tables, the summary and the report, then
rewrite every participant report with the group verdicts."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bidsapp.errors import UsageError
from bidsapp.group.identification import identification_summary, identify, merge_identification
from bidsapp.group.ratings import merge_ratings, read_ratings
from bidsapp.group.report import render_group_report
from bidsapp.group.summary import recommend, summarise
from bidsapp.results.group_tables import (
    IDENTIFICATION_TABLE, MISSING_TABLE, RATINGS_DIR, SUMMARY_TABLE, result_table, to_tsv,
)
from bidsapp.results.records import (
    Collection, collect, defacer_order, image_order, subject_of, suffix_order,
)
from bidsapp.results.tables import COSTS, HEADLINES, ID_COLUMNS, add_verdicts, rows
from bidsapp.verdicts import FACE_REMOVED_MIN_PCT

LOGGER = logging.getLogger("bidsapp")


def missing_participants(bids_dir: Path | None, found: Collection,
                         subjects: Iterable[str] = ()) -> pd.DataFrame:
    """Participants of ``bids_dir`` (``sub-*`` with an anatomical image; only ``subjects`` when
    given) with no successful defacer result in ``found``, and why: a task that was killed or
    failed is listed instead of silently leaving fewer images to compare."""
    wanted, rows_ = set(subjects), []
    folders = sorted(Path(bids_dir).glob("sub-*")) if bids_dir and Path(bids_dir).is_dir() else []
    for folder in folders:
        label = folder.name[4:]
        if (wanted and label not in wanted) or not folder.is_dir() or not (
                any(folder.glob("anat/*.nii*")) or any(folder.glob("ses-*/anat/*.nii*"))):
            continue
        results = [r for r in found.results if r.subject == label]
        if any(r.data.get("status") == "ok" for r in results):
            continue
        if results:
            reason = "every defacer failed (see Errors)"
        elif any(r.subject == label for r in found.inputs):
            reason = "no defacer result (the participant run stopped early: killed?)"
        else:
            reason = "no record at all (the participant run did not run, failed early or was killed)"
        rows_.append({"participant_id": folder.name, "reason": reason})
    return pd.DataFrame(rows_, columns=["participant_id", "reason"])


def run_group(settings) -> int:
    """The group level: tables, summary and report from ``settings.output_dir`` alone.

    Returns 0, or 1 when some record or ratings file could not be read, or a participant report
    could not be rewritten (reported, skipped).
    Raises :class:`bidsapp.errors.UsageError` when there is no participant result to compare.
    """
    output_dir = Path(settings.output_dir)
    start = time.perf_counter()
    if not output_dir.is_dir():
        raise UsageError(f"output_dir {output_dir} does not exist; run the participant level "
                           "into it first (bidsapp bids_dir output_dir participant)")
    subjects = tuple(getattr(settings, "participant_labels", ()) or ())
    found = collect(output_dir, subjects)
    if not found.results and not found.inputs:
        which = f" for participant(s) {', '.join(subjects)}" if subjects else ""
        raise UsageError(f"no participant results{which} in {output_dir} (no sub-*/anat/"
                           "*_desc-<defacer>_<suffix>.json); run the participant level into "
                           "this folder first")
    if subjects:
        seen = {r.subject for r in found.results + found.inputs}
        for label in subjects:
            if label not in seen:
                LOGGER.warning("participant %s has no results in %s; skipped", label, output_dir)
    identification, lines = None, []
    if not getattr(settings, "skip_identification", False):
        identification, lines = identify(settings.bids_dir, output_dir, found)
    missing = missing_participants(getattr(settings, "bids_dir", None), found, subjects)
    for row in missing.itertuples(index=False):
        LOGGER.warning("%s has no result: %s", row.participant_id, row.reason)
    outputs = write_group_outputs(output_dir, found, identification=identification,
                                  extra_problems=lines, missing=missing)
    outputs.problems += rewrite_reports(settings, sorted({r.subject for r in
                                                          found.results + found.inputs}))
    for line in outputs.problems:
        LOGGER.error("problem: %s", line)
    LOGGER.info("group level: %d result(s) of %d image(s), %d participant(s) in %.1f s; "
                "report: %s", outputs.n_results, outputs.n_images, outputs.n_subjects,
                time.perf_counter() - start, outputs.report)
    return 1 if outputs.problems else 0


def rewrite_reports(settings, subjects: Iterable[str]) -> list[str]:
    """Rewrite each participant's report now that the group tables hold the group verdicts and
    the identification; one problem line per report that failed (figures are cached, so this is
    cheap). The reports keep the participant level's ``show_faces`` choice only when the group
    level is given it too."""
    from bidsapp.reports.participant import write_reports

    failed = write_reports(settings.output_dir, subjects,
                           show_faces=getattr(settings, "show_faces", False),
                           bids_dir=getattr(settings, "bids_dir", None))
    return [f"sub-{subject}.html: the report was not rewritten ({why})"
            for subject, why in failed]


@dataclass
class GroupOutputs:
    tables: list[Path]
    summary: Path
    report: Path
    problems: list[str]
    n_results: int
    n_images: int
    n_subjects: int


def write_group_outputs(output_dir: Path, found: Collection, *,
                        threshold: float = FACE_REMOVED_MIN_PCT,
                        identification: pd.DataFrame | None = None,
                        extra_problems: Iterable[str] = (),
                        missing: pd.DataFrame | None = None) -> GroupOutputs:
    """Write the group tables, summary and report for the records in ``found``; ``missing``:
    the dataset's participants without results (:func:`missing_participants`)."""
    from bidsapp.io import atomic_write_text

    problems = list(found.problems) + list(extra_problems)
    table = add_verdicts(merge_identification(rows(found.results), identification),
                         threshold=threshold)
    ratings, rating_problems = read_ratings(output_dir / RATINGS_DIR)
    problems += rating_problems
    subjects = {r.subject for r in found.results + found.inputs}
    ratings = ratings[ratings["image"].map(subject_of).isin(subjects)]
    table, unmatched = merge_ratings(table, ratings)
    table["report"] = [f"sub-{s}.html" if (output_dir / f"sub-{s}.html").is_file() else None
                       for s in table["subject"]]
    table = _ordered(table)
    tables = []
    for suffix in suffix_order(table["suffix"]):
        path = result_table(output_dir, suffix)
        atomic_write_text(path, to_tsv(table[table["suffix"] == suffix].dropna(axis=1, how="all")))
        tables.append(path)
    summary = summarise(table, threshold=threshold)
    summary_path = output_dir / SUMMARY_TABLE
    atomic_write_text(summary_path, to_tsv(summary))
    rates = identification_summary(identification)
    if not rates.empty:
        atomic_write_text(output_dir / IDENTIFICATION_TABLE, to_tsv(rates))
        tables.append(output_dir / IDENTIFICATION_TABLE)
    if missing is not None:
        atomic_write_text(output_dir / MISSING_TABLE, to_tsv(missing))
        tables.append(output_dir / MISSING_TABLE)
    html = render_group_report(output_dir, table, summary, recommend(summary), found,
                               ratings=ratings, unmatched_ratings=unmatched,
                               problems=problems, threshold=threshold, tables=tables,
                               identification=rates, missing=missing)
    report = output_dir / "group_report.html"
    atomic_write_text(report, html)
    return GroupOutputs(tables, summary_path, report, problems, len(table),
                        len({r.image for r in found.results + found.inputs}), len(subjects))




def _ordered(table: pd.DataFrame) -> pd.DataFrame:
    """Identity, headlines, verdict, rating, costs, then every other column (sorted)."""
    first = [*ID_COLUMNS, "status", "verdict", "verdict_reason", *HEADLINES, *COSTS, "rating",
             "rating_notes", "rater", "rating_time", "error", "report"]
    first = [c for c in first if c in table]
    rest = sorted(c for c in table.columns if c not in first)
    order = {name: i for i, name in enumerate(defacer_order(table["defacer"].dropna()))}
    images = {name: i for i, name in enumerate(image_order(zip(table["image"],
                                                               table["suffix"])))}
    table = table.assign(_order=table["defacer"].map(order), _image=table["image"].map(images))
    table = table.sort_values(["_image", "_order"], kind="stable")
    return table[first + rest].reset_index(drop=True)


