"""What the group level wrote: the ``group_<suffix>.tsv`` tables, their text format, and the
group verdicts and identification figures read back from them (for the participant reports and
the export); the ratings folder's name and values.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: Rating values of the participant reports' widget.
RATINGS = ("pass", "brain-cut", "face-remains", "other")
#: Where the group level looks for exported ratings (``*.json`` and ``*.tsv``).
RATINGS_DIR = "ratings"
#: The identification rates per suffix and defacer, beside the summary.
IDENTIFICATION_TABLE = "group_identification.tsv"
#: The summary table (one row per suffix and defacer).
SUMMARY_TABLE = "group_summary.tsv"
#: Participants of the dataset without a successful result (one row each, header only if none).
MISSING_TABLE = "group_missing.tsv"
#: The per-attack-mode figures of a result (``identification.<mode>.<figure>`` columns).
IDENTIFICATION_FIGURES = ("rank", "n_candidates", "distance", "same_scan_distance",
                          "reidentified")


def result_table(output_dir: Path, suffix: str) -> Path:
    """The group table of one suffix: ``group_<suffix>.tsv``, one row per image and defacer."""
    return Path(output_dir) / f"group_{suffix}.tsv"


def result_tables(output_dir: Path) -> list[Path]:
    """The ``group_<suffix>.tsv`` tables on disk (not the summary nor the identification rates)."""
    return [path for path in sorted(Path(output_dir).glob("group_*.tsv"))
            if path.name not in (SUMMARY_TABLE, IDENTIFICATION_TABLE)]


def cell(value: str) -> Any:
    """One TSV cell as :func:`to_tsv` wrote it: ``n/a`` and "" -> None, true/false -> bool,
    numbers -> int or float, anything else the text.

    >>> [cell(v) for v in ("n/a", "", "true", "3", "0.25", "y+0p+0")]
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

    if cell(row.get(f"identification.{next(iter(MODES))}.n_candidates", "n/a")) is None:
        return None
    out: dict[str, Any] = {
        key: cell(row.get(f"identification.{key}", "n/a"))
        for key in ("reidentified", "views", "views_with_face", "best_score", "best_view",
                    "best_box")}
    for mode in MODES:
        out[mode] = {name: cell(row.get(f"identification.{mode}.{name}", "n/a"))
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




def to_tsv(table: pd.DataFrame) -> str:
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


