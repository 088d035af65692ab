"""Building the copy: walk the input, write each file as the export wants it, prune, publish.

Defaced images replace the originals, JSON files are scrubbed, NIfTI headers cleared, every
other file is hard-linked (copied when linking is impossible). Each file's fate goes into the
report's ``files``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bidsapp.bids import image_folder
from bidsapp.export.nifti import clean_nifti, cleared_entry, nifti_identifiers
from bidsapp.export.paths import EXCLUDED_FOLDERS, KEPT_HIDDEN, inside, relative, sidecar
from bidsapp.export.report import ExportReport, ImageDecision
from bidsapp.export.scrub import dumps, has_column, read_json, rows_without, scrub_metadata
from bidsapp.io import atomic_write_text
from bidsapp.outputs import dataset_description

#: Entities a raw ``_defacemask`` may carry besides ``mod`` (bids-validator 1.15).
DEFACEMASK_ENTITIES = ("sub", "ses", "task", "acq", "rec", "run")


def build_tree(report: ExportReport, partial: Path, fields: list[str], hardlink: bool) -> None:
    """Write the export into ``partial``; what goes wrong with a file goes to ``problems``."""
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    images = {image.image: image for image in report.images}
    omitted = {image.image for image in report.images if image.status == "omitted"}
    omitted |= {sidecar(name) for name in list(omitted)}
    for rel, src in _walk(report.bids_dir, report):
        dst = partial / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if rel in omitted:
            reason = images[rel].reasons if rel in images else ["sidecar of an omitted image"]
            report.files[rel] = {"action": "omitted", "reason": "; ".join(reason)}
            continue
        if not src.exists():
            report.problems.append(f"{rel}: cannot be read (a broken link: fetch the content, "
                                   "e.g. `datalad get`, before exporting)")
            continue
        try:
            if rel in images:
                entry = _write_image(images[rel], dst, report)
            elif rel == "dataset_description.json":
                entry = _write_description(src, dst, fields, report)
            elif rel.endswith(".json"):
                entry = _write_json(src, dst, fields, hardlink)
            elif rel.endswith((".nii", ".nii.gz")):
                entry = _write_nifti(src, dst, hardlink)
            elif rel.endswith("_scans.tsv") and omitted:
                entry = _write_scans(src, dst, rel, omitted, hardlink)
            else:
                entry = {"action": _link(src, dst, hardlink)}
        except (OSError, ValueError, TypeError) as exc:
            report.problems.append(f"{rel}: {exc}")
            continue
        report.files[rel] = entry
        if rel.endswith(("_scans.tsv", "_sessions.tsv")) and has_column(src, "acq_time"):
            report.warnings.append(f"{rel}: its acq_time column (dates of the visits) is "
                                   "copied unchanged; shift the dates before sharing if they "
                                   "identify anyone")
    if omitted:
        _prune(partial, report)


def publish(partial: Path, export_dir: Path) -> None:
    """Move the finished copy into place (an existing empty ``export_dir`` is replaced)."""
    if export_dir.is_dir():
        export_dir.rmdir()  # only an empty folder gets here
    os.rename(partial, export_dir)


def _walk(root: Path, report: ExportReport) -> Iterable[tuple[str, Path]]:
    """(relative path, path) of every exported file, sorted; records what is left out."""
    for folder, dirs, files in os.walk(root, followlinks=True):
        here = Path(folder)
        top = here == root
        for name in sorted(dirs):
            rel = (here / name).relative_to(root).as_posix()
            hidden = name.startswith(".") or (top and name in EXCLUDED_FOLDERS)
            if hidden or inside(here / name, report.output_dir):
                report.excluded.append(rel + "/")
                dirs.remove(name)
        dirs.sort()
        for name in sorted(files):
            rel = (here / name).relative_to(root).as_posix()
            if name.startswith(".") and not (top and name in KEPT_HIDDEN):
                report.excluded.append(rel)
                continue
            yield rel, here / name


def _link(src: Path, dst: Path, hardlink: bool) -> str:
    """Hard-link ``src`` (its target, for a symbolic link) at ``dst``, else copy it."""
    real = src.resolve()
    if hardlink:
        try:
            os.link(real, dst)
            return "linked"
        except OSError:
            pass
    shutil.copyfile(real, dst)
    return "copied"


def _write_image(image: ImageDecision, dst: Path, report: ExportReport) -> dict[str, Any]:
    cleared = clean_nifti(image._defaced, dst)
    entry = {"action": "defaced", "source": image.source, **cleared_entry(cleared)}
    if report.include_defacemask and image._mask is not None:
        _write_defacemask(image, dst.parent, report)
    elif report.include_defacemask:
        report.warnings.append(f"{image.image}: no defacemask in output_dir; none exported")
    return entry


def _write_defacemask(image: ImageDecision, folder: Path, report: ExportReport) -> None:
    anat = image._anat
    extra = [key for key in dict(anat.entities) if key not in DEFACEMASK_ENTITIES]
    if extra:
        report.warnings.append(f"{image.image}: no defacemask exported (BIDS allows no "
                               f"{'/'.join(extra)} entity in a _defacemask name)")
        return
    name = "_".join([f"{k}-{v}" for k, v in anat.entities] + [f"mod-{anat.suffix}",
                                                                "defacemask.nii.gz"])
    rel = (image_folder(anat) / name).as_posix()
    if rel in report.files or (report.bids_dir / rel).exists():
        report.warnings.append(f"{rel} exists in bids_dir; {image.image}'s mask not exported")
        return
    cleared = clean_nifti(image._mask, folder / name)
    report.files[rel] = {"action": "added", "source": relative(image._mask, report.output_dir),
                         **cleared_entry(cleared)}


def _write_json(src: Path, dst: Path, fields: list[str], hardlink: bool) -> dict[str, Any]:
    scrubbed, removed = scrub_metadata(read_json(src), fields)
    if not removed:
        return {"action": _link(src, dst, hardlink)}
    atomic_write_text(dst, dumps(scrubbed))
    return {"action": "scrubbed", "removed_fields": removed}


def _write_description(src: Path, dst: Path, fields: list[str],
                       report: ExportReport) -> dict[str, Any]:
    data, removed = scrub_metadata(read_json(src), fields)
    if not isinstance(data, dict):
        raise TypeError("dataset_description.json does not hold a JSON object")
    versions = sorted({i.defacer_version for i in report.images if i.defacer_version})
    generated = dict(dataset_description()["GeneratedBy"][0])
    generated.update(
        Name="bidsapp export",
        Description=f"copy for sharing: faces removed with {report.defacer}"
                    f"{' ' + ', '.join(versions) if versions else ''}; identifying JSON "
                    "fields, NIfTI header text and header extensions removed")
    previous = data.get("GeneratedBy")
    data["GeneratedBy"] = (list(previous) if isinstance(previous, list) else []) + [generated]
    if previous is not None and not isinstance(previous, list):
        report.warnings.append("dataset_description.json: GeneratedBy was not a list; replaced")
    atomic_write_text(dst, dumps(data))
    return {"action": "updated", "removed_fields": removed, "added_fields": ["GeneratedBy"]}


def _write_nifti(src: Path, dst: Path, hardlink: bool) -> dict[str, Any]:
    if not any(nifti_identifiers(src).values()):
        return {"action": _link(src, dst, hardlink)}
    return {"action": "header-cleared", **cleared_entry(clean_nifti(src, dst))}


def _write_scans(src: Path, dst: Path, rel: str, omitted: set[str],
                 hardlink: bool) -> dict[str, Any]:
    """A ``_scans.tsv`` without the rows of omitted images."""
    folder = rel.rsplit("/", 1)[0] if "/" in rel else ""
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = rows_without(lines, "filename",
                        lambda name: f"{folder}/{name}".lstrip("/") in omitted)
    if kept is None or not kept[1]:
        return {"action": _link(src, dst, hardlink)}
    atomic_write_text(dst, "".join(kept[0]))
    return {"action": "rows-removed", "rows_removed": kept[1]}


def _prune(partial: Path, report: ExportReport) -> None:
    """Remove sessions and participants that no data file is left for, and their rows."""
    def has_data(folder: Path) -> bool:
        return any(p.is_file() and not p.name.endswith((".json", ".tsv"))
                   for p in folder.rglob("*"))

    removed_subjects = []
    for subject in sorted(partial.glob("sub-*")):
        if not subject.is_dir():
            continue
        removed_sessions = []
        for session in sorted(subject.glob("ses-*")):
            if session.is_dir() and not has_data(session):
                removed_sessions.append(session.name)
                _drop_tree(session, partial, report)
        if not has_data(subject):
            removed_subjects.append(subject.name)
            _drop_tree(subject, partial, report)
        elif removed_sessions:
            _drop_rows(partial / subject.name / f"{subject.name}_sessions.tsv",
                       "session_id", removed_sessions, partial, report)
    if removed_subjects:
        _drop_rows(partial / "participants.tsv", "participant_id", removed_subjects, partial,
                   report)


def _drop_tree(folder: Path, partial: Path, report: ExportReport) -> None:
    for path in folder.rglob("*"):
        rel = path.relative_to(partial).as_posix()
        if rel in report.files and report.files[rel]["action"] != "omitted":
            report.files[rel] = {"action": "omitted",
                                 "reason": f"no data left in {folder.name} to export"}
    shutil.rmtree(folder)


def _drop_rows(table: Path, column: str, values: list[str], partial: Path,
               report: ExportReport) -> None:
    if not table.is_file():
        return
    lines = table.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = rows_without(lines, column, values.__contains__)
    if kept is None or not kept[1]:
        return
    table.unlink()  # it may be a hard link to the original: never write through it
    atomic_write_text(table, "".join(kept[0]))
    report.files[table.relative_to(partial).as_posix()] = {"action": "rows-removed",
                                                           "rows_removed": kept[1]}
