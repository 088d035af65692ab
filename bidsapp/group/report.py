"""The group report's HTML: summary, recommendation, distributions, gallery, identification."""

from __future__ import annotations

import base64
import re
import time
from pathlib import Path
from typing import Any

import pandas as pd

from bidsapp.results.group_tables import RATINGS_DIR, SUMMARY_TABLE, result_table
from bidsapp.results.links import anchor, figure_path
from bidsapp.results.records import (
    Collection, defacer_order, image_order, subject_of, suffix_order,
)
from bidsapp.results.tables import iqm_difference_columns
from bidsapp.verdicts import FACE_REMOVED_MIN_PCT

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

