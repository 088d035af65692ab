"""One row per suffix and defacer (pass rate, distributions, failures, ratings), and the
defacers recommended from it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bidsapp.results.records import defacer_order, suffix_order
from bidsapp.results.tables import COSTS, add_verdicts, iqm_difference_columns, numeric
from bidsapp.verdicts import FACE_REMOVED_MIN_PCT

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
                row[f"{column}_median"] = _quantile(numeric(group[column]), 0.5)
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


