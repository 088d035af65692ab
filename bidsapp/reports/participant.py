"""The participant report: one self-contained HTML page per participant, from ``output_dir`` alone.

``output_dir/sub-<label>.html`` shows, for each anatomical image: the input's checks, a table
comparing the defacers (verdict, headline metrics, time, memory), every metric and every IQM
difference side by side, and for each defacer a mosaic of the defaced image with the altered
voxels and the brain outline, renders of the defaced head (front, 45 degrees, side), its
provenance and a rating widget. An errors section lists what failed and where its log is.

Figures are written as PNG files under ``output_dir/sub-<label>/figures/`` (the group report's
gallery links them) and inlined into the page as ``data:`` URIs, so the page works offline and on
its own. The original face is never shown unless ``show_faces`` is set: such a report is
identifying data. See docs/reports.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pandas as pd

from bidsapp.bids import derivative_stem
from bidsapp.reports import asset, bidsapp_version, format_number, render_template
from bidsapp.reports.participant_figures import (
    Figures, Framing, Seen, cameras, detection_builder, mosaic_builder, render_builder,
)
from bidsapp.results.group_tables import RATINGS, RATINGS_DIR, read_group_results
from bidsapp.results.links import anchor, figure_path
from bidsapp.results.records import collect, defacer_order, image_order
from bidsapp.results.tables import (
    add_verdicts, iqm_difference_columns, is_iqm, metric_columns, rows,
)
from bidsapp.verdicts import FACE_REMOVED_MIN_PCT

LOGGER = logging.getLogger("bidsapp")

#: Record keys shown as provenance, in this order (others that are not metrics follow).
PROVENANCE = ("title", "version", "kind", "mode", "command", "parameters", "options", "guard",
              "seed", "threads", "notes")


def dataset_id(output_dir: Path) -> str:
    """A short, stable identifier of the output folder: ratings are stored in the browser under it."""
    return hashlib.sha1(str(Path(output_dir).resolve()).encode()).hexdigest()[:12]


def _sibling(record_path: Path, key: str, desc: str, kind: str) -> Path:
    return record_path.parent / f"{derivative_stem(key, desc=desc, mod=True, suffix=kind)}.nii.gz"


def _original_image(output_dir: Path, record: dict[str, Any], bids_dir: Path | None
                    ) -> Path | None:
    """The input image, from its record's ``Sources`` and the dataset's ``SourceDatasets``."""
    sources = [s for s in record.get("Sources", []) if str(s).startswith("bids:raw:")]
    if not sources:
        return None
    relative = sources[0][len("bids:raw:"):]
    roots = [Path(bids_dir)] if bids_dir else []
    try:
        description = json.loads((output_dir / "dataset_description.json").read_text())
        for item in description.get("SourceDatasets", []):
            url = urlparse(item.get("URL", ""))
            if url.scheme == "file":
                roots.append(Path(unquote(url.path)))
    except (OSError, ValueError):
        pass
    for root in roots:
        if (root / relative).is_file():
            return root / relative
    return None


def _distance(value) -> str:
    return "n/a" if value is None else f"{float(value):.3f}"


def _group_entry(entry: dict[str, Any] | None, record) -> tuple[dict[str, Any] | None, bool]:
    """The group level's entry of a result, and whether it is stale (older than the record)."""
    if entry is None:
        return None, False
    try:
        stale = entry["table"].stat().st_mtime < record.path.stat().st_mtime
    except OSError:
        stale = False
    return (None, True) if stale else (entry, False)


def _identification_block(entry: dict[str, Any] | None, stale: bool, has_other: bool
                          ) -> dict[str, Any]:
    """The card's re-identification figures, or why there are none."""
    from bidsapp.identification import MATCH_DISTANCE, MODES

    if stale:
        return {"run": False, "why": "not shown: the group level ran before this result was "
                "written; rerun the group level"}
    if entry is None:
        return {"run": False, "why": "not run: the group level has not run on this output "
                "folder yet (it runs the attack on every participant's results)"}
    found = entry["identification"]
    if found is None:
        return {"run": False, "why": "not run at the group level (--skip-identification, or "
                "the attack could not run on this result: see the group report's problems)"}
    rows = []
    for mode, label in MODES.items():
        figures = found[mode]
        if figures["rank"] is None:
            rank = ("no other image of this participant" if not has_other else
                    "not ranked (no face descriptor shared with the gallery)")
        else:
            rank = f"{int(figures['rank'])} of {figures['n_candidates']}"
        rows.append({"mode": label, "rank": rank, "distance": _distance(figures["distance"]),
                     "same_scan": _distance(figures["same_scan_distance"]),
                     "reidentified": format_number(figures["reidentified"])})
    return {"run": True, "rows": rows, "match": MATCH_DISTANCE,
            "reidentified": format_number(found["reidentified"])}


def _detector_block(data: dict[str, Any]) -> dict[str, Any] | None:
    """The face detector's answer on the defaced renders (participant-level metrics)."""
    metrics = data.get("metrics")
    if not isinstance(metrics, dict) or "face_detected" not in metrics:
        return None
    box = metrics.get("face_box")
    box = list(box) if isinstance(box, (list, tuple)) and len(box) == 4 else None
    return {"detected": format_number(metrics.get("face_detected")),
            "found": metrics.get("face_detected") is True and bool(metrics.get("face_view"))
            and box is not None,
            "score": format_number(metrics.get("face_score")),
            "view": metrics.get("face_view") or "n/a", "views": metrics.get("face_views"),
            "box": box, "box_text": "none" if box is None else
            "left {} top {} right {} bottom {} (pixels)".format(*box),
            "figure": None}


def _value(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, indent=1) if value else "none"
    return format_number(value)


def _side_by_side(table: pd.DataFrame, columns: list[str]) -> dict[str, Any]:
    """Metric rows x defacer columns, formatted."""
    return {"defacers": list(table["defacer"]),
            "rows": [(c, [format_number(v) for v in table[c]]) for c in columns]}


def _summary_rows(table: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for _, row in table.iterrows():
        out.append({
            "defacer": row["defacer"], "anchor": anchor(row["image"], row["defacer"]),
            "status": row["status"], "verdict": row["verdict"], "reason": row["verdict_reason"],
            "brain": format_number(row["brain_voxels_altered"]),
            "face": format_number(row["face_removed_pct"]),
            "detected": format_number(None if pd.isna(row["face_detected"])
                                      else bool(row["face_detected"])),
            "altered_ml": format_number(row.get("altered_ml")),
            "wall": format_number(row["wall_time_s"]), "rss": format_number(row["peak_rss_mb"]),
            "cpu": format_number(row["cpu_time_s"]),
            "reid": row.get("reid", "not run"),
        })
    return out


def _crash_files(output_dir: Path, subject: str) -> list[str]:
    folder = output_dir / "logs" / f"sub-{subject}" / "crash"
    if not folder.is_dir():
        return []
    return sorted(str(p.relative_to(output_dir)) for p in folder.rglob("*") if p.is_file())


def build_context(output_dir: Path, subject: str, *, show_faces: bool = False,
                  bids_dir: Path | None = None, figures: bool = True,
                  seen_dirs=None) -> dict[str, Any]:
    """Everything the template shows about one participant (figures made on the way)."""
    output_dir = Path(output_dir)
    measured = Seen(seen_dirs)
    found = collect(output_dir, [subject])
    table = add_verdicts(rows(found.results))
    inputs = {r.image: r for r in found.inputs}
    errors: list[dict[str, str | None]] = [
        {"where": p.split(":")[0], "error": p, "log": None} for p in found.problems]
    try:
        from_group = read_group_results(output_dir)
    except Exception as exc:  # a broken group table must not break the report
        from_group = {}
        errors.append({"where": "group tables", "error": f"not read: {exc}", "log": None})
    seen = {r.image for r in found.inputs if r.data.get("status") == "ok"}
    results = {}
    for record in found.results:
        results.setdefault(record.image, {})[record.defacer] = record
    maker = Figures(output_dir)
    images = []
    keys = image_order([(r.image, r.suffix) for r in found.inputs + found.results])
    metric_cols = [c for c in metric_columns(table) if not is_iqm(c)]
    iqm_cols = iqm_difference_columns(table)
    for key in keys:
        source = inputs.get(key)
        mine = table[table["image"] == key]
        order = defacer_order(mine["defacer"])
        mine = mine.set_index("defacer").loc[order].reset_index()
        has_other = bool(seen - {key})
        verdicts = []
        for i, name in enumerate(mine["defacer"]):
            done, stale = _group_entry(from_group.get((key, name)), results[key][name])
            verdicts.append((done, stale))
            if done is not None:
                mine.loc[i, "verdict"], mine.loc[i, "verdict_reason"] = \
                    done["verdict"], done["reason"]
        mine["verdict_source"] = ["group" if e else "participant" for e, _ in verdicts]
        mine["reid"] = [
            "stale" if stale else "not run" if e is None or e["identification"] is None
            else format_number(e["identification"]["reidentified"]) for e, stale in verdicts]
        suffix = source.suffix if source else mine["suffix"].iloc[0]
        first = source or next(iter(results[key].values()))
        brain = (output_dir / source.data["brain_mask"]) if source and \
            source.data.get("brain_mask") else _sibling(first.path, key, "brain", "mask")
        brain = brain if brain.is_file() else None
        cams = cameras(brain) if figures else None
        entry: dict[str, Any] = {
            "key": key, "suffix": suffix, "anchor": anchor(key),
            "input": _input_facts(source, output_dir), "results": [],
            "summary": _summary_rows(mine),
            "metrics": _side_by_side(mine, [c for c in metric_cols if mine[c].notna().any()]),
            "iqm": _side_by_side(mine, [c for c in iqm_cols if mine[c].notna().any()]),
            "original": None,
        }
        if source and source.data.get("status") not in (None, "ok"):
            errors.append({"where": f"{key} (input)", "error": source.data.get("error"),
                           "log": None})
        if figures and show_faces and source is not None:
            original = _original_image(output_dir, source.data, bids_dir)
            if original is not None:
                deps = [original] + ([brain] if brain else [])
                entry["original"] = {
                    "render": maker.make(figure_path(output_dir, key, suffix, "original",
                                                     "render"), deps,
                                         render_builder(original, brain, cams),
                                         f"{key} original render"),
                    "mosaic": maker.make(figure_path(output_dir, key, suffix, "original",
                                                     "mosaic"), deps,
                                         mosaic_builder(original, None, brain),
                                         f"{key} original mosaic"),
                }
        framing = Framing(_original_image(output_dir, source.data, bids_dir)
                          if source is not None else None, brain)
        for i, row in mine.iterrows():
            name = row["defacer"]
            record = results[key][name]
            card = _result_card(output_dir, record, row, suffix, brain, cams, maker,
                                figures, measured)
            done, stale = verdicts[i]
            card["verdict_source"] = row["verdict_source"]
            card["stale"] = stale
            card["identification"] = _identification_block(done, stale, has_other)
            card["detector"] = _detector_block(record.data) if card["ok"] else None
            detector = card["detector"]
            if figures and detector and detector["found"] and framing.original is not None \
                    and brain is not None:
                defaced = record.path.with_name(record.path.name[: -len(".json")] + ".nii.gz")
                detector["figure"] = maker.make(
                    figure_path(output_dir, key, suffix, name, "detection"),
                    [framing.original, defaced, record.path] + ([brain] if brain else []),
                    detection_builder(framing, defaced, detector["view"], detector["box"],
                                      measured.get(key, name)),
                    f"{key} / {name} detector's view")
            entry["results"].append(card)
            if record.data.get("status") != "ok":
                errors.append({"where": f"{key} / {name}",
                               "error": record.data.get("error") or "failed (no message)",
                               "log": card["log"]})
        images.append(entry)
    if not show_faces:  # never leave an identifying figure behind from an earlier opt-in
        for stale in (output_dir / f"sub-{subject}" / "figures").glob("*_desc-original_*.png"):
            stale.unlink()
    errors += maker.errors
    return {
        "title": f"sub-{subject}: defacing report", "subject": subject,
        "generated": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "version": bidsapp_version(output_dir), "show_faces": show_faces,
        "threshold": FACE_REMOVED_MIN_PCT, "ratings": RATINGS,
        "from_group": any(c["verdict_source"] == "group" for i in images
                          for c in i["results"]),
        "ratings_dir": RATINGS_DIR, "images": images, "errors": errors,
        "crash_files": _crash_files(output_dir, subject),
        "meta": {"dataset": dataset_id(output_dir), "subject": subject,
                 "dataset_name": output_dir.name, "ratings": list(RATINGS)},
    }


def _input_facts(source, output_dir: Path) -> list[tuple[str, str]]:
    if source is None:
        return [("record", "missing (the input record was not written)")]
    data = source.data
    facts = [("status", data.get("status", "n/a"))]
    if data.get("error"):
        facts.append(("error", data["error"]))
    for key, label in (("shape", "shape"), ("zooms_mm", "voxel size (mm)"),
                       ("orientation", "orientation"), ("dtype", "data type"),
                       ("oblique", "oblique"), ("mode", "defacing mode"),
                       ("reference_t1w", "mask carried from"), ("brain_mask", "brain mask")):
        if key in data and data[key] is not None:
            value = data[key]
            facts.append((label, " x ".join(str(v) for v in value)
                          if isinstance(value, list) else format_number(value)))
    return facts


def _result_card(output_dir, record, row, suffix, brain, cams, maker, figures, measured):
    name, data = record.defacer, record.data
    key = record.image
    defaced = record.path.with_name(record.path.name[: -len(".json")] + ".nii.gz")
    altered = _sibling(record.path, key, name, "defacemask")
    ok = data.get("status") == "ok" and defaced.is_file()
    log = data.get("log")
    card = {
        "defacer": name, "title": data.get("title") or name, "anchor": anchor(key, name),
        "image": key, "status": data.get("status", "n/a"), "error": data.get("error"),
        "verdict": row["verdict"], "reason": row["verdict_reason"],
        "log": log if log and (output_dir / log).is_file() else None, "log_named": log,
        "mosaic": None, "render": None, "ok": ok,
    }
    provenance = []
    for field in PROVENANCE:
        if field in data and data[field] not in (None, [], {}):
            provenance.append((field, _value(data[field])))
    card["provenance"] = provenance
    if ok and figures:
        deps = [defaced, altered] + ([brain] if brain else [])
        card["mosaic"] = maker.make(figure_path(output_dir, key, suffix, name, "mosaic"), deps,
                                    mosaic_builder(defaced, altered, brain),
                                    f"{key} / {name} mosaic")
        card["render"] = maker.make(figure_path(output_dir, key, suffix, name, "render"), deps,
                                    render_builder(defaced, brain, cams,
                                                   measured.get(key, name)),
                                    f"{key} / {name} render")
    return card


def write_reports(output_dir: Path, subjects, *, show_faces: bool = False,
                  bids_dir: Path | None = None) -> list[tuple[str, str]]:
    """Write the report of each of ``subjects``; ``(subject, why)`` for each that failed (one
    report that fails never stops the others)."""
    failed = []
    for subject in subjects:
        try:
            path = write_participant_report(output_dir, subject, show_faces=show_faces,
                                            bids_dir=bids_dir)
            LOGGER.info("report: %s", path)
        except Exception as exc:
            LOGGER.error("the report of sub-%s failed: %s", subject, exc)
            failed.append((subject, f"{type(exc).__name__}: {exc}"))
    return failed


def write_participant_report(output_dir: Path, subject: str, *, show_faces: bool = False,
                             bids_dir: Path | None = None, figures: bool = True,
                             seen_dirs=None) -> Path:
    """Write ``output_dir/sub-<subject>.html`` from the participant's results; return its path.

    ``show_faces`` adds renders and slices of the *original* head (found through the records'
    ``Sources`` and ``dataset_description.json``, or ``bids_dir``): the report then identifies
    the participant. Figures are cached under ``sub-<subject>/figures/`` and rebuilt when older
    than their images; ``figures=False`` leaves them out (tables only). ``seen_dirs``: the
    metrics steps' folders of the defaced heads as measured (:mod:`bidsapp.metrics.seen`); the
    3D renders and the detector's view are drawn from them when there.
    """
    from markupsafe import Markup

    from bidsapp.io import atomic_write_text

    output_dir = Path(output_dir)
    subject = subject.removeprefix("sub-")
    context = build_context(output_dir, subject, show_faces=show_faces, bids_dir=bids_dir,
                            figures=figures, seen_dirs=seen_dirs)
    html = render_template("participant.html", script=Markup(asset("ratings.js")), **context)
    path = output_dir / f"sub-{subject}.html"
    atomic_write_text(path, html)
    return path


