"""Result tables: one row per record, the headline columns and the verdicts.

Pure functions on DataFrames, shared by the participant report and the group level. A result
*passes* when :func:`bidsapp.verdicts.verdict` says so (see docs/reports.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from bidsapp.results.records import Record, collect, flatten
from bidsapp.verdicts import FACE_REMOVED_MIN_PCT, FEATURES, verdict

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
#: Run costs shown beside the metrics.
COSTS = ("wall_time_s", "peak_rss_mb", "cpu_time_s")
#: Scalar record keys that are provenance or bookkeeping, not metrics.
NOT_METRICS = ("seed", "threads", "altered_ml")
NOT_METRIC_PREFIXES = ("parameters.", "options.", "guard.", "timings_s.")
#: Record keys never copied into the tables (free text, lists, absolute paths).
SKIPPED_KEYS = ("Description", "Sources", "image", "traceback")


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


def numeric(series: pd.Series) -> pd.Series:
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
            table[column] = numeric(table[found[0]]) * found[1]
    for column in COSTS:
        table[column] = numeric(table[column]) if column in table else np.nan
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
    features = {name: numeric(_column(table, f"{name}_altered_pct")) for name in FEATURES}
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


