"""Group level: read every participant result in ``output_dir``, compare the defacers.

Reads only ``output_dir`` (records, figures, ratings) and writes into it:

* ``group_<suffix>.tsv``: one row per image and defacer with every metric of its record
  (nested keys flattened with dots), the headline columns, the verdict and the merged rating;
* ``group_summary.tsv``: one row per suffix and defacer (pass rate, face removal, brain voxels
  altered, IQM differences, time, memory, failures, ratings, recommended);
* ``group_report.html``: the summary, the recommendation, distributions per defacer, a gallery
  of renders and links to the participant reports (offline, self-contained but for the gallery's
  thumbnails, which are the participant reports' figure files).

Then every participant's report (``sub-<label>.html``) is rewritten, so that it shows the group
verdicts and the identification figures of :func:`read_group_results`.

A result *passes* when :func:`bidsapp.verdicts.verdict` says so (defacer succeeded, brain
preserved, face regions removed, no face detected, not re-identified; see docs/reports.md).
The pure parts (:func:`aggregate`, :func:`add_verdicts`, :func:`summarise`, :func:`recommend`,
:func:`read_ratings`, :func:`merge_ratings`) take and return DataFrames, for tests and benchmarks.
"""

from __future__ import annotations

import base64
import csv
import json
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bidsapp.verdicts import FACE_REMOVED_MIN_PCT, FEATURES, verdict

LOGGER = logging.getLogger("bidsapp")

#: Rating values of the participant reports' widget.
RATINGS = ("pass", "brain-cut", "face-remains", "other")
#: Where the group level looks for exported ratings (``*.json`` and ``*.tsv``).
RATINGS_DIR = "ratings"
#: Identity columns of a result row, first in every table.
ID_COLUMNS = ("subject", "session", "image", "suffix", "defacer")
#: Canonical headline columns and the record keys (as :mod:`bidsapp.metrics.measure` writes
#: them) they are read from, with the factor that turns the value into the column's unit. The
#: exact name is tried first, then any flattened key that ends with ``.<name without prefix>``.
HEADLINES: dict[str, tuple[tuple[str, float], ...]] = {
    "brain_voxels_altered": (("metrics.brain_changed_voxels", 1),),
    "face_removed_pct": (("metrics.face_altered_pct", 1),),
    "face_detected": (("metrics.face_detected", 1),),
}
#: The identification attack's column: True when the person was re-identified.
REIDENTIFIED = "identification.reidentified"
#: The identification rates per suffix and defacer, beside the summary.
IDENTIFICATION_TABLE = "group_identification.tsv"
#: The summary table (one row per suffix and defacer).
SUMMARY_TABLE = "group_summary.tsv"
#: Participants of the dataset without a successful result (one row each, header only if none).
MISSING_TABLE = "group_missing.tsv"
#: The per-attack-mode figures of a result (``identification.<mode>.<figure>`` columns).
IDENTIFICATION_FIGURES = ("rank", "n_candidates", "distance", "same_scan_distance",
                          "reidentified")
#: Run costs shown beside the metrics.
COSTS = ("wall_time_s", "peak_rss_mb", "cpu_time_s")
#: Scalar record keys that are provenance or bookkeeping, not metrics.
NOT_METRICS = ("seed", "threads", "altered_ml")
NOT_METRIC_PREFIXES = ("parameters.", "options.", "guard.", "timings_s.")
#: Record keys never copied into the tables (free text, lists, absolute paths).
SKIPPED_KEYS = ("Description", "Sources", "image", "traceback")


# --- reading ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Record:
    """One JSON record of ``output_dir``: a defacer result, or an input (``defacer`` None)."""

    path: Path
    subject: str
    session: str | None
    image: str
    suffix: str
    defacer: str | None
    data: dict[str, Any]


@dataclass
class Collection:
    """Every record found, plus the files that could not be read (one line each)."""

    results: list[Record] = field(default_factory=list)
    inputs: list[Record] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def parse_name(name: str) -> tuple[list[tuple[str, str]], str] | None:
    """BIDS entities and suffix of a file name, or None when it is not a BIDS name.

    >>> parse_name("sub-01_acq-se_desc-quickshear_T1w.json")
    ([('sub', '01'), ('acq', 'se'), ('desc', 'quickshear')], 'T1w')
    """
    stem = name.split(".", 1)[0]
    parts = stem.split("_")
    if len(parts) < 2 or not parts[0].startswith("sub-"):
        return None
    entities = []
    for part in parts[:-1]:
        key, sep, value = part.partition("-")
        if not sep or not value:
            return None
        entities.append((key, value))
    return entities, parts[-1]


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalar values of a nested record, with dotted keys; lists become JSON text.

    >>> flatten({"a": 1, "b": {"c": 2.5, "d": {"e": True}}, "f": [1, 2]})
    {'a': 1, 'b.c': 2.5, 'b.d.e': True, 'f': '[1, 2]'}
    """
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, prefix=f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


def _record_files(output_dir: Path, subjects: Iterable[str]) -> list[Path]:
    wanted = set(subjects)
    files = []
    for folder in sorted(output_dir.glob("sub-*")):
        if not folder.is_dir() or (wanted and folder.name[4:] not in wanted):
            continue
        files += sorted(folder.glob("anat/*.json")) + sorted(folder.glob("ses-*/anat/*.json"))
    return files


def collect(output_dir: Path, subjects: Iterable[str] = ()) -> Collection:
    """Every input and defacer record under ``output_dir/sub-*/[ses-*/]anat/``.

    Records are ``<entities>_desc-<name>_<suffix>.json`` with an anatomical suffix and no ``mod-``
    entity; ``desc-original`` is the input's record, any other ``desc-`` a defacer's.
    """
    from bidsapp.bids import ANAT_SUFFIXES

    found = Collection()
    for path in _record_files(Path(output_dir), subjects):
        parsed = parse_name(path.name)
        if parsed is None:
            continue
        entities, suffix = parsed
        keys = dict(entities)
        if "mod" in keys or "desc" not in keys or "sub" not in keys or \
                suffix not in ANAT_SUFFIXES:
            continue
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
        except (OSError, ValueError, TypeError) as exc:
            found.problems.append(f"{path.relative_to(output_dir)}: unreadable record ({exc}); "
                                  "rerun the participant level for this participant")
            continue
        desc = keys["desc"]
        image = "_".join([f"{k}-{v}" for k, v in entities if k != "desc"] + [suffix])
        record = Record(path, keys["sub"], keys.get("ses"), image, suffix,
                        None if desc == "original" else desc, data)
        (found.inputs if desc == "original" else found.results).append(record)
    return found


def defacer_order(names: Iterable[str]) -> list[str]:
    """Registry order for known defacers, then alphabetical."""
    from bidsapp.defacers import REGISTRY

    known = list(REGISTRY)
    names = set(names)
    return [n for n in known if n in names] + sorted(names - set(known))


def suffix_order(suffixes: Iterable[str]) -> list[str]:
    """Suffixes in bidsapp's reporting order (T1w, T2w, FLAIR, ...), unknown ones last."""
    from bidsapp.bids import ANAT_SUFFIXES

    rank = {name: i for i, name in enumerate(ANAT_SUFFIXES)}
    return sorted(set(suffixes), key=lambda s: (rank.get(s, len(rank)), s))


def image_order(images: Iterable[tuple[str, str]]) -> list[str]:
    """Image keys from (key, suffix) pairs: by subject, session, suffix order, then name."""
    from bidsapp.bids import ANAT_SUFFIXES

    rank = {name: i for i, name in enumerate(ANAT_SUFFIXES)}

    def key(item):
        image, suffix = item
        parts = dict(p.split("-", 1) for p in image.split("_")[:-1] if "-" in p)
        return (parts.get("sub", ""), parts.get("ses", ""), rank.get(suffix, len(rank)), image)

    return [image for image, _ in sorted(set(images), key=key)]


def rows(records: Iterable[Record]) -> pd.DataFrame:
    """One row per record: identity columns, then every flattened scalar of the record."""
    table = []
    for record in records:
        data = {k: v for k, v in record.data.items() if k not in SKIPPED_KEYS}
        row = {"subject": record.subject, "session": record.session, "image": record.image,
               "suffix": record.suffix, "defacer": record.defacer}
        row.update({k: v for k, v in flatten(data).items() if k not in row})
        table.append(row)
    frame = pd.DataFrame(table)
    if frame.empty:
        frame = pd.DataFrame(columns=list(ID_COLUMNS) + ["status", "error"])
    for column in ("status", "error"):
        if column not in frame:
            frame[column] = None
    return frame


def aggregate(output_dir: Path, subjects: Iterable[str] = (), *,
              threshold: float = FACE_REMOVED_MIN_PCT) -> pd.DataFrame:
    """Every defacer result in ``output_dir`` as one row, with headlines and verdicts."""
    return add_verdicts(rows(collect(output_dir, subjects).results), threshold=threshold)


# --- headlines and verdicts -------------------------------------------------------------------

def resolve(columns: Iterable[str], candidates: Iterable[tuple[str, float]]
            ) -> tuple[str, float] | None:
    """The first candidate found among ``columns`` (exact name, then a dotted suffix)."""
    columns = list(columns)
    candidates = list(candidates)
    for name, scale in candidates:
        if name in columns:
            return name, scale
    for name, scale in candidates:
        leaf = name.rsplit(".", 1)[-1]
        for column in columns:
            if column.endswith("." + leaf):
                return column, scale
    return None


def _numeric(series: pd.Series) -> pd.Series:
    if series.dtype == object:
        series = series.map(lambda v: float(v) if isinstance(v, (bool, np.bool_)) else v)
    return pd.to_numeric(series, errors="coerce").astype(float)


def add_headlines(table: pd.DataFrame) -> pd.DataFrame:
    """Add the canonical :data:`HEADLINES` columns (NaN when no record key provides them)."""
    table = table.copy()
    for column, candidates in HEADLINES.items():
        found = resolve([c for c in table.columns if c not in HEADLINES], candidates)
        if found is None:
            table[column] = np.nan
        else:
            table[column] = _numeric(table[found[0]]) * found[1]
    for column in COSTS:
        table[column] = _numeric(table[column]) if column in table else np.nan
    return table


def _column(table: pd.DataFrame, name: str) -> pd.Series:
    """The record key ``name`` (exact or dotted suffix) as a column; None where absent."""
    found = resolve([c for c in table.columns if c not in HEADLINES], [(name, 1)])
    return table[found[0]] if found else pd.Series([None] * len(table), index=table.index)


def add_verdicts(table: pd.DataFrame, *, threshold: float = FACE_REMOVED_MIN_PCT
                 ) -> pd.DataFrame:
    """Headline columns, then ``verdict`` and ``verdict_reason`` for every row
    (:func:`bidsapp.verdicts.verdict`)."""
    table = add_headlines(table)
    features = {name: _numeric(_column(table, f"{name}_altered_pct")) for name in FEATURES}
    reidentified = table[REIDENTIFIED] if REIDENTIFIED in table else _column(table, REIDENTIFIED)
    pairs = [verdict(table["status"].iloc[i], table["brain_voxels_altered"].iloc[i],
                     table["face_removed_pct"].iloc[i],
                     {name: values.iloc[i] for name, values in features.items()},
                     table["face_detected"].iloc[i], reidentified.iloc[i], face_min=threshold)
             for i in range(len(table))]
    table["verdict"] = [p[0] for p in pairs]
    table["verdict_reason"] = [p[1] for p in pairs]
    return table


def metric_columns(table: pd.DataFrame) -> list[str]:
    """Numeric (or boolean) columns that are metrics: not identity, provenance or costs."""
    out = []
    skip = set(ID_COLUMNS) | set(COSTS) | set(NOT_METRICS) | set(HEADLINES)
    for column in table.columns:
        if column in skip or column.startswith(NOT_METRIC_PREFIXES):
            continue
        values = table[column].dropna()
        if values.empty:
            continue
        if all(isinstance(v, (bool, int, float, np.bool_, np.integer, np.floating))
               for v in values):
            out.append(column)
    return out


def is_iqm(column: str) -> bool:
    """Whether a flattened key belongs to the image quality metrics (first part ``iqm*``)."""
    return column.split(".")[0].lower().startswith("iqm")


def iqm_difference_columns(table: pd.DataFrame) -> list[str]:
    """Metric columns of image quality metrics that are differences (defaced vs original).

    IQM keys start with ``iqm``; a difference has ``diff``, ``delta`` or ``change`` in its name.
    """
    return [c for c in metric_columns(table) if is_iqm(c)
            and re.search(r"diff|delta|change", c, re.IGNORECASE)]


# --- ratings ----------------------------------------------------------------------------------

def read_ratings(folder: Path) -> tuple[pd.DataFrame, list[str]]:
    """Every rating in ``folder/*.json`` and ``folder/*.tsv``; and the unreadable files.

    Returns columns image, defacer, rating, notes, rater, time, file.
    """
    entries, problems = [], []
    folder = Path(folder)
    for path in sorted(folder.glob("*.json")) + sorted(folder.glob("*.tsv")):
        try:
            if path.suffix == ".json":
                payload = json.loads(path.read_text())
                items = payload.get("ratings", []) if isinstance(payload, dict) else payload
                rater = payload.get("rater") if isinstance(payload, dict) else None
                if not isinstance(items, list):
                    raise ValueError("'ratings' is not a list")
            else:
                with path.open(newline="") as handle:
                    items = list(csv.DictReader(handle, delimiter="\t"))
                rater = None
            for item in items:
                if not isinstance(item, dict) or not item.get("image") or not item.get("defacer"):
                    raise ValueError("an entry lacks 'image' or 'defacer'")
                entries.append({
                    "image": str(item["image"]), "defacer": str(item["defacer"]),
                    "rating": str(item.get("rating") or ""),
                    "notes": str(item.get("notes") or ""),
                    "rater": str(item.get("rater") or rater or ""),
                    "time": str(item.get("time") or ""), "file": path.name,
                })
        except (OSError, ValueError, csv.Error) as exc:
            problems.append(f"{path}: not a bidsapp ratings file ({exc}); export it again "
                            "from a participant report")
    columns = ["image", "defacer", "rating", "notes", "rater", "time", "file"]
    return pd.DataFrame(entries, columns=columns), problems


def merge_ratings(table: pd.DataFrame, ratings: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Add ``rating``, ``rating_notes``, ``rater``, ``rating_time`` (latest rating wins).

    Returns the table and the number of ratings that match no result.
    """
    table = table.copy()
    if ratings.empty:
        for column in ("rating", "rating_notes", "rater", "rating_time"):
            table[column] = None
        return table, 0
    ratings = ratings.copy()
    ratings["_when"] = pd.to_datetime(ratings["time"], errors="coerce", utc=True)
    ratings = ratings.sort_values("_when", na_position="first", kind="stable")
    latest = ratings.drop_duplicates(["image", "defacer"], keep="last")
    latest = latest.rename(columns={"notes": "rating_notes", "time": "rating_time"})
    latest = latest[["image", "defacer", "rating", "rating_notes", "rater", "rating_time"]]
    keys = set(zip(table["image"], table["defacer"]))
    unmatched = sum(1 for k in zip(latest["image"], latest["defacer"]) if k not in keys)
    table = table.drop(columns=[c for c in latest.columns[2:] if c in table])
    merged = table.merge(latest, on=["image", "defacer"], how="left")
    merged[["rating", "rating_notes", "rater", "rating_time"]] = merged[
        ["rating", "rating_notes", "rater", "rating_time"]].astype(object).where(
        merged[["rating", "rating_notes", "rater", "rating_time"]].notna(), None)
    return merged, unmatched


# --- summary and recommendation ---------------------------------------------------------------

def _quantile(values: pd.Series, q: float) -> float:
    values = values.dropna()
    return float(values.quantile(q)) if len(values) else float("nan")


def summarise(table: pd.DataFrame, *, threshold: float = FACE_REMOVED_MIN_PCT) -> pd.DataFrame:
    """One row per suffix and defacer: pass rate, distributions, failures, ratings.

    ``table`` is :func:`aggregate`'s output (verdicts are added when missing). A defacer is
    ``recommended`` for a suffix when it was run on every image of that suffix, passed on each,
    and no rater marked one of them as anything but ``pass``.
    """
    if "verdict" not in table:
        table = add_verdicts(table, threshold=threshold)
    iqm = iqm_difference_columns(table)
    out = []
    for suffix in suffix_order(table["suffix"]):
        by_suffix = table[table["suffix"] == suffix]
        images = by_suffix["image"].nunique()
        for name in defacer_order(by_suffix["defacer"].dropna().unique()):
            group = by_suffix[by_suffix["defacer"] == name]
            face = group["face_removed_pct"]
            brain = group["brain_voxels_altered"]
            ratings = group["rating"] if "rating" in group else pd.Series([], dtype=object)
            rated = ratings.dropna()
            rated = rated[rated != ""]
            row = {
                "suffix": suffix, "defacer": name, "n_images": len(group),
                "n_images_of_suffix": int(images),
                "n_failed": int((group["status"] != "ok").sum()),
                "n_pass": int((group["verdict"] == "pass").sum()),
                "n_fail": int((group["verdict"] == "fail").sum()),
                "n_unknown": int((group["verdict"] == "n/a").sum()),
            }
            row["pass_rate"] = row["n_pass"] / row["n_images"] if row["n_images"] else np.nan
            row.update({
                "face_removed_pct_median": _quantile(face, 0.5),
                "face_removed_pct_q25": _quantile(face, 0.25),
                "face_removed_pct_q75": _quantile(face, 0.75),
                "face_removed_pct_min": float(face.min()) if face.notna().any() else np.nan,
                "brain_voxels_altered_median": _quantile(brain, 0.5),
                "brain_voxels_altered_max": float(brain.max()) if brain.notna().any() else np.nan,
                "n_brain_altered": int((brain > 0).sum()),
                "n_face_detected": int((group["face_detected"] > 0).sum()),
            })
            for cost in COSTS:
                row[f"{cost}_median"] = _quantile(group[cost], 0.5)
                row[f"{cost}_max"] = float(group[cost].max()) if group[cost].notna().any() \
                    else np.nan
            for column in iqm:
                row[f"{column}_median"] = _quantile(_numeric(group[column]), 0.5)
            row["n_rated"] = len(rated)
            row["n_rated_pass"] = int((rated == "pass").sum())
            row["n_rated_problem"] = int((rated != "pass").sum())
            row["recommended"] = bool(row["n_images"] == images and row["n_pass"] == images
                                      and images > 0 and row["n_rated_problem"] == 0)
            out.append(row)
    return pd.DataFrame(out)


def recommend(summary: pd.DataFrame) -> dict[str, list[str]]:
    """Recommended defacers per suffix, and under ``"all"`` those recommended for every suffix.

    >>> s = pd.DataFrame({"suffix": ["T1w", "T1w", "T2w"], "defacer": ["a", "b", "a"],
    ...                   "recommended": [True, True, False]})
    >>> recommend(s)
    {'T1w': ['a', 'b'], 'T2w': [], 'all': []}
    """
    out: dict[str, list[str]] = {}
    if summary.empty:
        return {"all": []}
    for suffix in suffix_order(summary["suffix"]):
        group = summary[summary["suffix"] == suffix]
        out[str(suffix)] = [d for d, r in zip(group["defacer"], group["recommended"]) if r]
    suffixes = [s for s in out]
    everywhere = [d for d in defacer_order(summary["defacer"].unique())
                  if all(d in out[s] for s in suffixes)]
    out["all"] = everywhere
    return out


# --- the group level --------------------------------------------------------------------------

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
            reason = "no defacer result: the participant run stopped early (killed?)"
        else:
            reason = "no results: the participant run did not run, failed early or was killed"
        rows_.append({"participant_id": folder.name, "reason": reason})
    return pd.DataFrame(rows_, columns=["participant_id", "reason"])


def _usage_error(message: str):
    from bidsapp.cli.run import UsageError

    return UsageError(message)


def run_group(settings) -> int:
    """The group level: tables, summary and report from ``settings.output_dir`` alone.

    Returns 0, or 1 when some record or ratings file could not be read, or a participant report
    could not be rewritten (reported, skipped).
    Raises :class:`bidsapp.cli.run.UsageError` when there is no participant result to compare.
    """
    output_dir = Path(settings.output_dir)
    start = time.perf_counter()
    if not output_dir.is_dir():
        raise _usage_error(f"output_dir {output_dir} does not exist; run the participant level "
                           "into it first (bidsapp bids_dir output_dir participant)")
    subjects = tuple(getattr(settings, "participant_labels", ()) or ())
    found = collect(output_dir, subjects)
    if not found.results and not found.inputs:
        which = f" for participant(s) {', '.join(subjects)}" if subjects else ""
        raise _usage_error(f"no participant results{which} in {output_dir} (no sub-*/anat/"
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
    from bidsapp.reports.participant import write_participant_report

    problems = []
    for subject in subjects:
        try:
            write_participant_report(settings.output_dir, subject,
                                     show_faces=getattr(settings, "show_faces", False),
                                     bids_dir=getattr(settings, "bids_dir", None))
        except Exception as exc:  # one report must not stop the others
            problems.append(f"sub-{subject}.html: the report was not rewritten "
                            f"({type(exc).__name__}: {exc})")
    return problems


@dataclass
class GroupOutputs:
    tables: list[Path]
    summary: Path
    report: Path
    problems: list[str]
    n_results: int
    n_images: int
    n_subjects: int


def identify(bids_dir: Path, output_dir: Path, found: Collection) -> tuple[pd.DataFrame | None,
                                                                         list[str]]:
    """The re-identification attack on the collected results (:mod:`bidsapp.identification`)."""
    from bidsapp.identification import attack_dataset

    start = time.perf_counter()
    keys = sorted({r.image for r in found.inputs if r.data.get("status") == "ok"})
    results = [(r.image, r.defacer) for r in found.results if r.data.get("status") == "ok"]
    table, problems = attack_dataset(bids_dir, output_dir, keys, results, log=LOGGER.info)
    if table is not None:
        LOGGER.info("identification attack: %d probe(s) of %d original(s) in %.1f s",
                    len(table), len(keys), time.perf_counter() - start)
    return table, problems


def merge_identification(table: pd.DataFrame, identification: pd.DataFrame | None
                         ) -> pd.DataFrame:
    """The attack's columns beside each result row (by image and defacer)."""
    if identification is None or identification.empty:
        return table
    columns = [c for c in identification.columns if c.startswith("identification.")]
    return table.merge(identification[["image", "defacer", *columns]], how="left",
                       on=["image", "defacer"])


def identification_summary(identification: pd.DataFrame | None) -> pd.DataFrame:
    """Rank-1/rank-5 rates per suffix and defacer, the originals' own rate first."""
    from bidsapp.identification import ORIGINAL, rates

    frame = rates(identification)
    if frame.empty:
        return frame
    suffixes = {name: i for i, name in enumerate(suffix_order(frame["suffix"]))}
    names = {name: i for i, name in enumerate(
        [ORIGINAL] + defacer_order(d for d in frame["defacer"] if d != ORIGINAL))}
    frame = frame.assign(_s=frame["suffix"].map(suffixes), _d=frame["defacer"].map(names))
    return frame.sort_values(["_s", "_d"]).drop(columns=["_s", "_d"]).reset_index(drop=True)


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
        atomic_write_text(path, _tsv(table[table["suffix"] == suffix].dropna(axis=1, how="all")))
        tables.append(path)
    summary = summarise(table, threshold=threshold)
    summary_path = output_dir / SUMMARY_TABLE
    atomic_write_text(summary_path, _tsv(summary))
    rates = identification_summary(identification)
    if not rates.empty:
        atomic_write_text(output_dir / IDENTIFICATION_TABLE, _tsv(rates))
        tables.append(output_dir / IDENTIFICATION_TABLE)
    if missing is not None:
        atomic_write_text(output_dir / MISSING_TABLE, _tsv(missing))
        tables.append(output_dir / MISSING_TABLE)
    html = render_group_report(output_dir, table, summary, recommend(summary), found,
                               ratings=ratings, unmatched_ratings=unmatched,
                               problems=problems, threshold=threshold, tables=tables,
                               identification=rates, missing=missing)
    report = output_dir / "group_report.html"
    atomic_write_text(report, html)
    return GroupOutputs(tables, summary_path, report, problems, len(table),
                        len({r.image for r in found.results + found.inputs}), len(subjects))


def result_table(output_dir: Path, suffix: str) -> Path:
    """The group table of one suffix: ``group_<suffix>.tsv``, one row per image and defacer."""
    return Path(output_dir) / f"group_{suffix}.tsv"


def result_tables(output_dir: Path) -> list[Path]:
    """The ``group_<suffix>.tsv`` tables on disk (not the summary, not the identification rates)."""
    return [path for path in sorted(Path(output_dir).glob("group_*.tsv"))
            if path.name not in (SUMMARY_TABLE, IDENTIFICATION_TABLE)]


def _cell(value: str) -> Any:
    """One TSV cell as :func:`_tsv` wrote it: ``n/a`` and "" -> None, true/false -> bool,
    numbers -> int or float, anything else the text.

    >>> [_cell(v) for v in ("n/a", "", "true", "3", "0.25", "y+0p+0")]
    [None, None, True, 3, 0.25, 'y+0p+0']
    """
    if value in ("n/a", ""):
        return None
    if value in ("true", "false"):
        return value == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _identification_of(row: dict[str, str]) -> dict[str, Any] | None:
    """The identification figures of one group-table row; None when it was not attacked."""
    from bidsapp.identification import MODES

    if _cell(row.get(f"identification.{next(iter(MODES))}.n_candidates", "n/a")) is None:
        return None
    out: dict[str, Any] = {
        key: _cell(row.get(f"identification.{key}", "n/a"))
        for key in ("reidentified", "views", "views_with_face", "best_score", "best_view",
                    "best_box")}
    for mode in MODES:
        out[mode] = {name: _cell(row.get(f"identification.{mode}.{name}", "n/a"))
                     for name in IDENTIFICATION_FIGURES}
    return out


def read_group_results(output_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(image, defacer) -> what the group level concluded, from the group tables on disk.

    Each value holds ``verdict`` and ``reason`` (the group verdict, re-identification
    included), ``table`` (the file it was read from) and ``identification``: None when the
    attack did not run on that result (``--skip-identification``, no models, not attacked),
    else ``reidentified``, the detections of the attack's renders (``views``,
    ``views_with_face``, ``best_score``, ``best_view``, ``best_box``) and per mode
    (:data:`bidsapp.identification.MODES`) the :data:`IDENTIFICATION_FIGURES`, None where the
    table says ``n/a``. Tables are read as text (``keep_default_na=False``): ``n/a`` is the
    tables' missing value, not pandas' NaN guess.
    """
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path in result_tables(output_dir):
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        if not {"image", "defacer", "verdict"} <= set(table.columns):
            continue
        for row in table.to_dict("records"):
            out[(row["image"], row["defacer"])] = {
                "verdict": row["verdict"], "reason": row.get("verdict_reason", ""),
                "table": path, "identification": _identification_of(row)}
    return out


def read_verdicts(output_dir: Path) -> dict[tuple[str, str], tuple[str, str]]:
    """(image, defacer) -> (verdict, reason) from the ``group_<suffix>.tsv`` tables on disk."""
    return {key: (value["verdict"], value["reason"])
            for key, value in read_group_results(output_dir).items()}


def subject_of(image: str) -> str:
    """The participant label of an image key (``sub-01_T1w`` -> ``01``)."""
    match = re.match(r"sub-([A-Za-z0-9]+)", str(image))
    return match.group(1) if match else ""


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


def _tsv(table: pd.DataFrame) -> str:
    """BIDS-style TSV text: tab separated, ``n/a`` for missing values, booleans as true/false,
    floats to 8 significant digits."""
    table = table.copy()
    for column in table.columns:
        values = table[column]
        if values.dtype == object:
            values = values.map(lambda v: re.sub(r"[\t\r\n]+", " ", v) if isinstance(v, str)
                                else v)
            table[column] = values
        if values.dtype == bool or values.map(lambda v: isinstance(v, (bool, np.bool_))).any():
            table[column] = values.map(
                lambda v: ("true" if v else "false") if isinstance(v, (bool, np.bool_)) else v)
    return table.to_csv(sep="\t", index=False, na_rep="n/a", lineterminator="\n",
                        float_format="%.8g")


# --- the group report -------------------------------------------------------------------------

#: Distributions plotted per defacer (column -> title); IQM differences are added after these.
PLOTTED = {"face_removed_pct": "face removed (%)", "brain_voxels_altered": "brain voxels altered",
           "wall_time_s": "wall time (s)", "peak_rss_mb": "peak memory (MB)"}
#: At most this many IQM differences are plotted (all are in the tables): first those most
#: exposed to defacing (background and whole-image IQMs, in this order), then alphabetically.
MAX_IQM_PLOTS = 8
IQMS_FIRST = ("efc", "fber", "wm2max", "qi_2", "snrd_total", "cnr", "cjv", "snr_total")


def plotted_iqms(columns: list[str], limit: int = MAX_IQM_PLOTS) -> dict[str, str]:
    """IQM difference columns to plot, with short titles.

    >>> plotted_iqms(["iqms.a.delta.cnr", "iqms.a.delta.efc", "iqms.b.delta.efc"], 2)
    {'iqms.a.delta.efc': 'a: efc change', 'iqms.b.delta.efc': 'b: efc change'}
    """
    rank = {name: i for i, name in enumerate(IQMS_FIRST)}
    ordered = sorted(columns, key=lambda c: (rank.get(c.split(".")[-1], len(rank)), c))
    out = {}
    for column in ordered[:limit]:
        parts = [p for p in column.split(".")[1:] if not re.fullmatch(
            r"diff|delta|change|differences?", p, re.IGNORECASE)]
        mode = ".".join(parts[:-1]).replace("_", " ")
        out[column] = f"{mode + ': ' if mode else ''}{parts[-1] if parts else column} change"
    return out


def _identification_rows(rates: pd.DataFrame | None, suffix: str) -> list[dict[str, Any]]:
    """The group report's identification table of one suffix."""
    from bidsapp.identification import MODES, ORIGINAL

    if rates is None or rates.empty:
        return []
    out = []
    for row in rates[rates["suffix"] == suffix].to_dict("records"):
        cells = {"defacer": "originals (ceiling)" if row["defacer"] == ORIGINAL
                 else row["defacer"], "n": row["n_probes"]}
        for mode in MODES:
            ranked = row[f"{mode}_n_ranked"]
            for k in (1, 5):
                rate = row[f"{mode}_rank{k}_rate"]
                cells[f"{mode}{k}"] = (f"{row[f'{mode}_rank{k}']}/{ranked} "
                                       f"({_fmt(100 * rate)}%)" if ranked else "n/a")
                cells[f"{mode}{k}_chance"] = _fmt(100 * row[f"{mode}_rank{k}_chance"])
            cells[f"{mode}_reid"] = row[f"{mode}_reidentified"]
        out.append(cells)
    return out


def _fmt(value) -> str:
    from bidsapp.reports import format_number

    return format_number(value)


def render_group_report(output_dir: Path, table: pd.DataFrame, summary: pd.DataFrame,
                        recommendation: dict[str, list[str]], found: Collection, *,
                        ratings: pd.DataFrame, unmatched_ratings: int, problems: list[str],
                        threshold: float = FACE_REMOVED_MIN_PCT,
                        tables: list[Path] = (), identification: pd.DataFrame | None = None,
                        missing: pd.DataFrame | None = None) -> str:
    """The group report's HTML (figures inlined, gallery thumbnails linked as local files)."""
    from bidsapp.reports import bidsapp_version, citation_link, plots, render_template
    from bidsapp.reports.participant import anchor, figure_path

    output_dir = Path(output_dir)
    iqm = iqm_difference_columns(table)
    sections = []
    for suffix in suffix_order(table["suffix"]):
        rows_ = table[table["suffix"] == suffix]
        defacers = defacer_order(rows_["defacer"].dropna().unique())
        images = image_order(zip(rows_["image"], rows_["suffix"]))
        plotted = {**PLOTTED, **plotted_iqms(iqm)}
        png = plots.plot_distributions(rows_, plotted, by="defacer", columns=4)
        by_key = {(r.image, r.defacer): r for r in rows_.itertuples(index=False)}
        matrix = []
        for image in images:
            cells = []
            for name in defacers:
                row = by_key.get((image, name))
                if row is None:
                    cells.append({"verdict": None})
                    continue
                link = f"{row.report}#{anchor(image, name)}" if row.report else None
                cells.append({"verdict": row.verdict, "reason": row.verdict_reason,
                              "failed": row.status != "ok",
                              "face": _fmt(row.face_removed_pct), "link": link,
                              "brain": _fmt(row.brain_voxels_altered),
                              "rating": getattr(row, "rating", None)})
            subject = subject_of(image)
            report = f"sub-{subject}.html" if (output_dir / f"sub-{subject}.html").is_file() \
                else None
            matrix.append({"image": image, "report": report, "cells": cells})
        gallery = []
        for name in defacers:
            thumbs = []
            for row in rows_[rows_["defacer"] == name].itertuples(index=False):
                figure = figure_path(output_dir, row.image, row.suffix, name, "render")
                thumbs.append({
                    "image": row.image, "verdict": row.verdict, "failed": row.status != "ok",
                    "src": figure.relative_to(output_dir).as_posix() if figure.is_file() else None,
                    "link": f"{row.report}#{anchor(row.image, name)}" if row.report else None,
                })
            gallery.append({"defacer": name, "thumbs": thumbs})
        summary_rows = []
        for row in summary[summary["suffix"] == suffix].to_dict("records"):
            summary_rows.append({
                "defacer": row["defacer"], "recommended": row["recommended"],
                "pass": f"{row['n_pass']}/{row['n_images']}",
                "pass_rate": _fmt(100 * row["pass_rate"]) if not pd.isna(row["pass_rate"])
                else "n/a",
                "not_run": row["n_images_of_suffix"] - row["n_images"],
                "unknown": row["n_unknown"], "failed": row["n_failed"],
                "face": (f"{_fmt(row['face_removed_pct_median'])} "
                         f"[{_fmt(row['face_removed_pct_q25'])}, "
                         f"{_fmt(row['face_removed_pct_q75'])}]"),
                "face_min": _fmt(row["face_removed_pct_min"]),
                "brain": (f"{_fmt(row['brain_voxels_altered_median'])} / "
                          f"{_fmt(row['brain_voxels_altered_max'])}"),
                "n_brain": row["n_brain_altered"], "detected": row["n_face_detected"],
                "wall": f"{_fmt(row['wall_time_s_median'])} / {_fmt(row['wall_time_s_max'])}",
                "rss": f"{_fmt(row['peak_rss_mb_median'])} / {_fmt(row['peak_rss_mb_max'])}",
                "rated": f"{row['n_rated_pass']}/{row['n_rated']}",
                "iqm": [(c, _fmt(row.get(f"{c}_median"))) for c in iqm],
            })
        sections.append({
            "identification": _identification_rows(identification, suffix),
            "suffix": suffix, "defacers": defacers, "n_images": len(images),
            "recommended": recommendation.get(str(suffix), []), "summary": summary_rows,
            "plot": "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
            "matrix": matrix, "gallery": gallery, "iqm": iqm,
            "table": result_table(output_dir, suffix).name,
        })
    failures = [{"where": f"{r.image} / {r.defacer}", "error": r.error or "failed (no message)",
                 "log": r.log if isinstance(getattr(r, "log", None), str)
                 and (output_dir / r.log).is_file() else None,
                 "report": r.report}
                for r in table[table["status"] != "ok"].itertuples(index=False)]
    failures += [{"where": f"{r.image} (input)", "error": r.data.get("error") or "failed",
                  "log": None, "report": None}
                 for r in found.inputs if r.data.get("status") not in (None, "ok")]
    reports = sorted({f"sub-{s}.html" for s in table["subject"]} |
                     {f"sub-{r.subject}.html" for r in found.inputs})
    context = {
        "title": "bidsapp group report", "version": bidsapp_version(output_dir),
        "generated": time.strftime("%Y-%m-%d %H:%M %Z"), "threshold": threshold,
        "n_subjects": len({r.subject for r in found.results + found.inputs}),
        "n_images": len({r.image for r in found.results + found.inputs}),
        "n_results": len(table), "sections": sections,
        "overall": recommendation.get("all", []), "citation": citation_link(output_dir),
        "failures": failures, "problems": problems,
        "missing": [] if missing is None else missing.to_dict("records"),
        "reports": [(name, (output_dir / name).is_file()) for name in reports],
        "ratings": {"n": len(ratings), "files": sorted(set(ratings["file"])) if len(ratings)
                    else [], "unmatched": unmatched_ratings, "dir": RATINGS_DIR,
                    "merged": int(table["rating"].notna().sum()) if "rating" in table else 0},
        "tables": [p.name for p in tables] + [SUMMARY_TABLE],
        "thumb_size": (3 * plots.RENDER_SIZE + 8, plots.RENDER_SIZE),
    }
    return render_template("group.html", **context)

