"""A shareable copy of the input dataset: faces removed, identifying metadata scrubbed.

:func:`export_dataset` writes a complete raw BIDS dataset into a new folder:

- every anatomical image (the suffixes in :data:`bidsapp.bids.ANAT_SUFFIXES`) is replaced by
  one defacer's output from the participant level. An image is *refused* when that defacer
  failed, left no output, changed no voxel, wrote an image off the input's grid, altered
  brain voxels, or when the group level's verdict for it is ``fail`` (the face remains, a face
  is still detected, or the person was re-identified: ``verdicts``); one refusal stops the
  whole export (nothing but the report is written) unless ``force``. With ``force`` a defaced image that altered the brain or changed nothing is
  shipped, and an image with no usable defaced version is left out with its sidecar
  (never shipped with its face);
- every JSON file (sidecars, top-level inheritance files, ``participants.json``, ...) loses the
  keys in the scrub list, at any depth; an unchanged JSON is linked as it is;
- every NIfTI file gets its header text fields (:data:`NIFTI_TEXT_FIELDS`) blanked, its
  header extensions and any gzip file name, comment or time stamp dropped; voxel data, dtype,
  scaling and transforms are kept byte for byte. A NIfTI with nothing to clear is linked;
- every other file is hard-linked (copied when linking is impossible);
- ``sourcedata/``, ``derivatives/`` and hidden files (except ``.bidsignore``) are left out:
  they hold DICOMs, other tools' images with faces, or converter caches with patient names;
- ``dataset_description.json`` stays a raw dataset's and gains a ``GeneratedBy`` entry.

The copy is built in a hidden ``.<name>.partial-<pid>`` folder beside ``export_dir`` and
renamed into place at the end, so an interrupted export never looks finished. The
de-identification report (:func:`report_path`) is written beside the export, outside it.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import nibabel as nib
import numpy as np
from nibabel.nifti1 import Nifti1Header
from nibabel.nifti2 import Nifti2Header
from nibabel.volumeutils import endian_codes

from bidsapp import __version__
from bidsapp.bids import AnatImage, find_anatomical_images, image_folder, load_layout
from bidsapp.io import atomic_write_json, atomic_write_text
from bidsapp.outputs import output_path

LOGGER = logging.getLogger("bidsapp.export")

#: JSON keys removed from every JSON file of the export, at any depth (exact, case-sensitive
#: names). BIDSonym's list first, then identifiers that dcm2niix (``-ba n``), heudiconv or
#: dcmstack copy from the DICOM header. ProtocolName and SeriesDescription are free text typed
#: at the scanner console: sites put study codes, operator or participant names in them (as
#: the test data's ProcedureStepDescription shows, "Rorden^Rorden_Prisma"), and BIDS names and
#: acquisition parameters already carry what analyses need, so both go by default; keep them
#: with ``keep_fields``. PatientPosition, BodyPartExamined, Manufacturer, the model and
#: software versions stay: pipelines read them and they do not identify a person.
DEFAULT_SCRUB_FIELDS: tuple[str, ...] = (
    # BIDSonym's defaults
    "AcquisitionTime", "InstitutionAddress", "InstitutionName", "InstitutionalDepartmentName",
    "ProcedureStepDescription", "ProtocolName", "PulseSequenceDetails", "SeriesDescription",
    "global",
    # dates and times of the visit
    "AcquisitionDateTime", "AcquisitionDate", "StudyDate", "StudyTime", "SeriesDate",
    "SeriesTime", "ContentDate", "ContentTime", "InstanceCreationDate", "InstanceCreationTime",
    "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
    # the patient
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "PatientSex",
    "PatientAge", "PatientWeight", "PatientSize", "PatientAddress", "PatientTelephoneNumbers",
    "PatientComments", "OtherPatientIDs", "OtherPatientNames", "PatientBirthName",
    "PatientMotherBirthName", "EthnicGroup", "AdditionalPatientHistory",
    # the people and the site
    "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName",
    "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord", "RequestingPhysician",
    "StationName", "DeviceSerialNumber",
    # study and series identifiers, free-text descriptions
    "AccessionNumber", "StudyID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
    "FrameOfReferenceUID", "StudyDescription", "RequestedProcedureDescription",
    "PerformedProcedureStepDescription", "PerformedProcedureStepID", "ImageComments",
    "StudyComments",
)

#: NIfTI header text fields blanked in every NIfTI of the export (dcm2niix writes the
#: acquisition time into ``descrip``). ``data_type`` is ANALYZE's unused text field.
NIFTI_TEXT_FIELDS = ("descrip", "aux_file", "db_name", "intent_name", "data_type")

#: gzip level of rewritten NIfTI files: level 1 is four times faster than 6 and, on MRI data,
#: about 2 % larger (nibabel's default too).
GZIP_LEVEL = 1

#: Top-level folders of bids_dir that are never exported (DICOMs, other tools' outputs).
EXCLUDED_FOLDERS = ("sourcedata", "derivatives")
#: Hidden files that are exported (every other name starting with "." is left out).
KEPT_HIDDEN = (".bidsignore",)

#: Entities a raw ``_defacemask`` may carry besides ``mod`` (bids-validator 1.15).
_DEFACEMASK_ENTITIES = ("sub", "ses", "task", "acq", "rec", "run")
_CODE_URL = "https://github.com/bidsapp/bidsapp"


class ExportError(ValueError):
    """A request that cannot be exported as asked (the CLI reports it as a usage error)."""


@dataclass
class ImageDecision:
    """What happens to one anatomical image of the input."""

    image: str  # path relative to bids_dir
    status: str  # "defaced", "forced" (shipped despite a refusal reason), "omitted", "refused"
    reasons: list[str] = field(default_factory=list)
    source: str | None = None  # the defaced image, relative to output_dir
    defacer_version: str | None = None
    altered_voxels: int | None = None
    brain_altered_voxels: int | None = None
    brain_check: str = "unavailable"  # "record", "brain mask", "guard", "unavailable"
    verdict: str | None = None  # the group level's verdict: "pass", "fail", "n/a" or None
    _defaced: Path | None = field(default=None, repr=False)
    _mask: Path | None = field(default=None, repr=False)
    _anat: AnatImage | None = field(default=None, repr=False)

    @property
    def shipped(self) -> bool:
        return self.status in ("defaced", "forced")

    def as_json(self) -> dict[str, Any]:
        return {"image": self.image, "status": self.status, "reasons": self.reasons,
                "source": self.source, "defacer_version": self.defacer_version,
                "altered_voxels": self.altered_voxels,
                "brain_altered_voxels": self.brain_altered_voxels,
                "brain_check": self.brain_check, "verdict": self.verdict}


@dataclass
class ExportReport:
    """The outcome of :func:`export_dataset`; ``as_json()`` is what the report file holds."""

    status: str  # "ok", "refused" (nothing exported), "failed" (nothing exported)
    bids_dir: Path
    output_dir: Path
    export_dir: Path
    defacer: str
    force: bool
    include_defacemask: bool
    scrub_fields: list[str]
    images: list[ImageDecision] = field(default_factory=list)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    report_path: Path | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def exit_code(self) -> int:
        """0 when the export was written, 1 when it was refused or failed."""
        return 0 if self.ok else 1

    def by_status(self, status: str) -> list[ImageDecision]:
        return [image for image in self.images if image.status == status]

    def counts(self) -> dict[str, int]:
        actions: dict[str, int] = {}
        for entry in self.files.values():
            actions[entry["action"]] = actions.get(entry["action"], 0) + 1
        images = {s: len(self.by_status(s)) for s in ("defaced", "forced", "omitted", "refused")}
        return {**{f"images_{k}": v for k, v in images.items()}, **dict(sorted(actions.items()))}

    def as_json(self) -> dict[str, Any]:
        removed = sorted({name for entry in self.files.values()
                          for name in entry.get("removed_fields", [])})
        return {
            "Description": "bidsapp de-identification report: what the export changed, per "
                           "file (field names only, never their values)",
            "bidsapp_version": __version__, "status": self.status,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(self.seconds, 1),
            "bids_dir": str(self.bids_dir), "output_dir": str(self.output_dir),
            "export_dir": str(self.export_dir), "defacer": self.defacer, "force": self.force,
            "include_defacemask": self.include_defacemask, "scrub_fields": self.scrub_fields,
            "nifti_text_fields": list(NIFTI_TEXT_FIELDS),
            "summary": {**self.counts(), "fields_removed": removed},
            "problems": self.problems, "warnings": self.warnings,
            "images": [image.as_json() for image in self.images],
            "excluded": self.excluded, "files": self.files,
        }

    def summary(self) -> str:
        """A few lines for the terminal."""
        counts = self.counts()
        head = {"ok": f"export written to {self.export_dir}",
                "refused": f"export refused: nothing written to {self.export_dir}",
                "failed": f"export failed: nothing written to {self.export_dir}"}[self.status]
        images = (f"  images with {self.defacer}: {counts['images_defaced']} defaced, "
                  f"{counts['images_forced']} forced, {counts['images_omitted']} omitted, "
                  f"{counts['images_refused']} refused")
        files = (f"  JSON scrubbed: {counts.get('scrubbed', 0)}, NIfTI headers cleared: "
                 f"{counts.get('header-cleared', 0) + counts.get('defaced', 0)}, unchanged "
                 f"(linked or copied): {counts.get('linked', 0) + counts.get('copied', 0)}")
        lines = [head, images, files]
        for image in self.by_status("refused"):
            lines.append(f"  refused {image.image}: {'; '.join(image.reasons)}")
        if self.by_status("refused"):
            lines.append("  fix these (or force the export: forced images that altered the "
                         "brain or failed the verdict are shipped, images with no defaced version are left out)")
        for image in self.by_status("forced") + self.by_status("omitted"):
            lines.append(f"  {image.status} {image.image}: {'; '.join(image.reasons)}")
        lines += [f"  problem: {problem}" for problem in self.problems]
        lines += [f"  warning: {warning}" for warning in self.warnings]
        if self.report_path:
            lines.append(f"  report: {self.report_path}")
        return "\n".join(lines)


# --- public helpers ------------------------------------------------------------------------

def report_path(export_dir: Path) -> Path:
    """Where the report of an export into ``export_dir`` goes: beside it, outside the copy.

    >>> report_path(Path("/data/share/ds001"))
    PosixPath('/data/share/ds001_deid-report.json')
    """
    export_dir = Path(os.path.abspath(export_dir))
    return export_dir.parent / f"{export_dir.name}_deid-report.json"


def scrub_fields_for(scrub_fields: Iterable[str] = DEFAULT_SCRUB_FIELDS,
                     extra_fields: Iterable[str] = (),
                     keep_fields: Iterable[str] = ()) -> list[str]:
    """The effective scrub list: ``scrub_fields`` + ``extra_fields`` - ``keep_fields``.

    >>> scrub_fields_for(["A", "B"], extra_fields=["C", "A"], keep_fields=["B"])
    ['A', 'C']
    """
    keep = set(keep_fields)
    out: list[str] = []
    for name in [*scrub_fields, *extra_fields]:
        if name not in keep and name not in out:
            out.append(name)
    return out


def scrub_metadata(data: Any, fields: Iterable[str] = DEFAULT_SCRUB_FIELDS
                   ) -> tuple[Any, list[str]]:
    """``data`` without the keys in ``fields`` (at any depth), and where each one was.

    >>> scrub_metadata({"EchoTime": 0.03, "InstitutionName": "X", "a": [{"PatientID": 1}]})
    ({'EchoTime': 0.03, 'a': [{}]}, ['InstitutionName', 'a[0].PatientID'])
    """
    names = set(fields)
    removed: list[str] = []

    def walk(node: Any, where: str) -> Any:
        if isinstance(node, dict):
            kept = {}
            for key, value in node.items():
                here = f"{where}.{key}" if where else key
                if key in names:
                    removed.append(here)
                else:
                    kept[key] = walk(value, here)
            return kept
        if isinstance(node, list):
            return [walk(value, f"{where}[{i}]") for i, value in enumerate(node)]
        return node

    return walk(data, ""), removed


def nifti_identifiers(path: Path) -> dict[str, list]:
    """What :func:`clean_nifti` would clear in the NIfTI at ``path`` (empty lists: nothing).

    Keys: ``header_fields`` (non-empty text fields), ``extensions`` (their codes),
    ``gzip_header`` (file name, comment, extra field or time stamp stored by gzip).
    """
    path = Path(path)
    with _open_nifti(path) as stream:
        parsed = _parse_prefix(stream)
    return {"header_fields": parsed.text_fields, "extensions": parsed.extensions,
            "gzip_header": _gzip_header_items(path)}


def clean_nifti(src: Path, dst: Path) -> dict[str, list]:
    """Write ``src`` to ``dst`` with header text fields blank and no extensions.

    The voxel data bytes, dtype, scaling and transforms are untouched; ``dst`` is gzipped (with
    no file name and a zero time stamp) when its name ends in ``.gz``. Returns what was cleared,
    as :func:`nifti_identifiers`.
    """
    src, dst = Path(src), Path(dst)
    with _open_nifti(src) as stream:
        parsed = _parse_prefix(stream)
        header = parsed.header
        for name in parsed.text_fields:
            header[name] = b""
        header["vox_offset"] = parsed.size + 4
        with _open_output(dst) as out:
            out.write(header.binaryblock)
            out.write(b"\x00\x00\x00\x00")  # extension flag: none follow
            shutil.copyfileobj(stream, out, 1 << 20)
    return {"header_fields": parsed.text_fields, "extensions": parsed.extensions,
            "gzip_header": _gzip_header_items(src)}


# --- the export ----------------------------------------------------------------------------

def export_dataset(bids_dir: Path, output_dir: Path, export_dir: Path, defacer: str, *,
                   force: bool = False, include_defacemask: bool = False,
                   scrub_fields: Sequence[str] = DEFAULT_SCRUB_FIELDS,
                   extra_fields: Sequence[str] = (), keep_fields: Sequence[str] = (),
                   hardlink: bool = True,
                   verdicts: Mapping[tuple[str, str], tuple[str, str]] | None = None
                   ) -> ExportReport:
    """Write a shareable copy of ``bids_dir`` into ``export_dir`` (see the module docstring).

    ``output_dir`` holds bidsapp's participant-level results; ``defacer`` names the one whose
    images are shipped. Raises :class:`ExportError` for a request that cannot work (paths that
    overlap, a non-empty ``export_dir``, no results of ``defacer``). Refused images and
    failures raise nothing: the returned report says what happened (``exit_code`` 1) and is
    also written to :func:`report_path` ``(export_dir)``. ``hardlink=False`` copies every
    unchanged file instead of linking it (a hard link shares its bytes with the original:
    editing it in place edits both). ``verdicts`` maps (image name without extension, defacer)
    to the group level's ``(verdict, reason)`` (:func:`bidsapp.group.read_verdicts`): a ``fail``
    refuses the image, a missing or ``n/a`` verdict is a warning (face removal not checked).
    """
    started = time.monotonic()
    bids_dir, output_dir, export_dir = (Path(os.path.abspath(p))
                                        for p in (bids_dir, output_dir, export_dir))
    _check_request(bids_dir, output_dir, export_dir, defacer)
    fields = scrub_fields_for(scrub_fields, extra_fields, keep_fields)
    report = ExportReport(status="ok", bids_dir=bids_dir, output_dir=output_dir,
                          export_dir=export_dir, defacer=defacer, force=force,
                          include_defacemask=include_defacemask, scrub_fields=fields,
                          report_path=report_path(export_dir))
    images = [image for image in find_anatomical_images(load_layout(bids_dir))
              if _exported(_relative(image.path, bids_dir))]
    report.images = [_decide(bids_dir, output_dir, image, defacer, force, verdicts)
                     for image in images]
    for image in report.images:
        if image.brain_check == "unavailable" and image.shipped:
            report.warnings.append(f"{image.image}: brain preservation not checked (no brain "
                                   "metric in the record and no brain mask in output_dir)")
        if verdicts is not None and image.shipped and image.verdict in (None, "n/a"):
            report.warnings.append(f"{image.image}: no group verdict (face removal and "
                                   "re-identification not measured: rerun the participant "
                                   "level without --skip-metrics)")

    if report.by_status("refused"):
        report.status = "refused"
    else:
        partial = export_dir.parent / f".{export_dir.name}.partial-{os.getpid()}"
        try:
            _build(report, partial, fields, hardlink)
            if report.problems:
                report.status = "failed"
            else:
                _publish(partial, export_dir)
        except Exception as exc:  # nothing half-written may look like an export
            LOGGER.exception("export failed")
            report.status = "failed"
            report.problems.append(f"{type(exc).__name__}: {exc}")
        finally:
            if partial.exists():
                shutil.rmtree(partial, ignore_errors=True)
        if not report.ok:
            report.files = {}
    report.seconds = time.monotonic() - started
    atomic_write_json(report.report_path, report.as_json())
    return report


def _check_request(bids_dir: Path, output_dir: Path, export_dir: Path, defacer: str) -> None:
    if not bids_dir.is_dir():
        raise ExportError(f"bids_dir {bids_dir} is not a folder; give the input BIDS dataset")
    if not output_dir.is_dir():
        raise ExportError(f"output_dir {output_dir} is not a folder; run the participant "
                          "level first")
    if not re.fullmatch(r"[A-Za-z0-9]+", defacer or ""):
        raise ExportError(f"defacer {defacer!r} is not a defacer name (letters and digits)")
    for name, other in (("bids_dir", bids_dir), ("output_dir", output_dir)):
        if _inside(export_dir, other) or _inside(other, export_dir):
            raise ExportError(f"export dir {export_dir} overlaps {name} {other}; export into "
                              "a new folder outside both")
    if export_dir.exists() and (not export_dir.is_dir() or any(export_dir.iterdir())):
        raise ExportError(f"export dir {export_dir} exists and is not an empty folder; "
                          "choose a new folder (an export never overwrites anything)")
    found = {m.group(1) for path in output_dir.glob("sub-*/**/anat/*_desc-*.json")
             if (m := re.search(r"_desc-([A-Za-z0-9]+)_[A-Za-z0-9]+\.json$", path.name))}
    found -= {"original", "brain"}
    if defacer not in found:
        have = ", ".join(sorted(found)) or "none"
        raise ExportError(f"output_dir {output_dir} holds no results of defacer {defacer!r} "
                          f"(results found: {have}); run the participant level with "
                          f"--defacers {defacer} first")


def _inside(child: Path, parent: Path) -> bool:
    child, parent = child.resolve(), parent.resolve()
    return child == parent or parent in child.parents


def _relative(path: Path, root: Path) -> str:
    for base in (root, root.resolve()):
        try:
            return Path(os.path.abspath(path)).relative_to(base).as_posix()
        except ValueError:
            continue
    raise ValueError(f"{path} is not inside {root}")


# --- per-image decisions -------------------------------------------------------------------

def image_name(path: Path) -> str:
    """A NIfTI file's name without its extension, the group tables' ``image`` key.

    >>> image_name(Path("sub-01/anat/sub-01_acq-se_T1w.nii.gz"))
    'sub-01_acq-se_T1w'
    """
    return Path(path).name.split(".nii")[0]


def _decide(bids_dir: Path, output_dir: Path, image: AnatImage, defacer: str,
            force: bool, verdicts: Mapping[tuple[str, str], tuple[str, str]] | None = None
            ) -> ImageDecision:
    """Whether ``image`` can be shipped with ``defacer``'s output, and why not."""
    decision = ImageDecision(image=_relative(image.path, bids_dir), status="defaced",
                             _anat=image)
    record_path = output_path(output_dir, image, desc=defacer, ext=".json")
    defaced = output_path(output_dir, image, desc=defacer)
    mask = output_path(output_dir, image, desc=defacer, suffix="defacemask", mod=True)
    unusable: list[str] = []  # no defaced image can be shipped
    doubtful: list[str] = []  # a defaced image exists but is not safe to share as it is
    record: dict[str, Any] = {}
    if not record_path.is_file():
        unusable.append(f"no {defacer} result in output_dir (run the participant level with "
                        f"--defacers {defacer} for this image)")
    else:
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError) as exc:
            unusable.append(f"the {defacer} record {record_path.name} cannot be read ({exc})")
    if record:
        decision.defacer_version = record.get("version")
        if record.get("status") != "ok":
            unusable.append(f"{defacer} failed on this image: "
                            f"{record.get('error') or 'no error message'}")
        elif not defaced.is_file():
            unusable.append(f"the defaced image {defaced.name} is missing from output_dir")
        else:
            grid = _grid_problem(image.path, defaced)
            if grid:
                unusable.append(grid)
    if not unusable:
        decision._defaced, decision.source = defaced, _relative(defaced, output_dir)
        decision._mask = mask if mask.is_file() else None
        altered = record.get("altered_voxels")
        decision.altered_voxels = int(altered) if isinstance(altered, (int, float)) else None
        if decision.altered_voxels == 0:
            doubtful.append(f"{defacer} changed no voxel: the face is still there")
        altered_brain, count, how = _brain_altered(record, output_dir, image, decision._mask)
        decision.brain_altered_voxels, decision.brain_check = count, how
        if altered_brain:
            amount = f"{count} brain voxel(s)" if count is not None else "brain voxels"
            doubtful.append(f"{defacer} altered {amount} (checked from the {how})")
        if verdicts is not None:
            decision.verdict, reason = verdicts.get((image_name(image.path), defacer),
                                                    (None, ""))
            if decision.verdict == "fail" and not altered_brain:
                doubtful.append(f"the group verdict is fail: {reason}")
    decision.reasons = unusable + doubtful
    if decision.reasons:
        decision.status = "refused" if not force else ("omitted" if unusable else "forced")
    return decision


def _grid_problem(original: Path, defaced: Path) -> str | None:
    try:
        a, b = nib.load(str(original)), nib.load(str(defaced))
    except (OSError, ValueError, EOFError, nib.filebasedimages.ImageFileError) as exc:
        return f"cannot read {defaced.name} or its original ({exc})"
    if a.shape != b.shape or not np.allclose(a.affine, b.affine, atol=1e-4):
        return (f"the defaced image {defaced.name} is not on the input's grid (shape "
                f"{b.shape} vs {a.shape}); the input changed after the participant level: rerun "
                "it")
    return None


_BRAIN_COUNT_KEYS = ("brain_altered_voxels", "brain_changed_voxels")


def _brain_altered(record: dict[str, Any], output_dir: Path, image: AnatImage,
                   altered_mask: Path | None) -> tuple[bool | None, int | None, str]:
    """Whether the defacer altered the brain, how many voxels, and where that comes from."""
    found = _find_brain_metric(record)
    if found is not None:
        return found[0], found[1], "record"
    brain_mask = output_path(output_dir, image, desc="brain", suffix="mask", mod=True)
    if altered_mask is not None and brain_mask.is_file():
        try:
            altered = np.asanyarray(nib.load(str(altered_mask)).dataobj) > 0
            brain = np.asanyarray(nib.load(str(brain_mask)).dataobj) > 0
            if altered.shape == brain.shape:
                count = int(np.count_nonzero(altered & brain))
                return count > 0, count, "brain mask"
        except (OSError, ValueError, EOFError, nib.filebasedimages.ImageFileError) as exc:
            LOGGER.debug("brain check from masks failed for %s: %s", image.key, exc)
    guard = record.get("guard")
    if isinstance(guard, dict) and guard.get("applied"):
        return False, 0, "guard"
    return None, None, "unavailable"


def _find_brain_metric(node: Any, depth: int = 0) -> tuple[bool, int | None] | None:
    """(altered, count) from the first brain count or flag in a record's dicts, if any."""
    if not isinstance(node, dict) or depth > 3:
        return None
    for key in _BRAIN_COUNT_KEYS:
        value = node.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value > 0, int(value)
    if isinstance(node.get("brain_altered"), bool):
        return node["brain_altered"], None
    for key, value in node.items():
        if key != "guard":
            found = _find_brain_metric(value, depth + 1)
            if found is not None:
                return found
    return None


# --- building the copy ---------------------------------------------------------------------

def _build(report: ExportReport, partial: Path, fields: list[str], hardlink: bool) -> None:
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    bids_dir = report.bids_dir
    images = {image.image: image for image in report.images}
    omitted = {image.image for image in report.images if image.status == "omitted"}
    omitted |= {_sidecar(name) for name in list(omitted)}
    for rel, src in _walk(bids_dir, report):
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
        if rel.endswith(("_scans.tsv", "_sessions.tsv")):
            _warn_acq_time(src, rel, report)
    if omitted:
        _prune(partial, report, hardlink)


def _walk(root: Path, report: ExportReport) -> Iterable[tuple[str, Path]]:
    """(relative path, path) of every exported file, sorted; records what is left out."""
    for folder, dirs, files in os.walk(root, followlinks=True):
        here = Path(folder)
        top = here == root
        for name in sorted(dirs):
            rel = (here / name).relative_to(root).as_posix()
            hidden = name.startswith(".") or (top and name in EXCLUDED_FOLDERS)
            if hidden or _inside(here / name, report.output_dir):
                report.excluded.append(rel + "/")
                dirs.remove(name)
        dirs.sort()
        for name in sorted(files):
            rel = (here / name).relative_to(root).as_posix()
            if name.startswith(".") and not (top and name in KEPT_HIDDEN):
                report.excluded.append(rel)
                continue
            yield rel, here / name


def _exported(rel: str) -> bool:
    """Whether a path relative to bids_dir is part of the export (as :func:`_walk` decides)."""
    parts = rel.split("/")
    hidden = any(part.startswith(".") for part in parts) and rel not in KEPT_HIDDEN
    return not hidden and not (len(parts) > 1 and parts[0] in EXCLUDED_FOLDERS)


def _sidecar(rel: str) -> str:
    return re.sub(r"\.nii(\.gz)?$", ".json", rel)


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
    entry = {"action": "defaced", "source": image.source, **_nonempty(cleared)}
    if report.include_defacemask and image._mask is not None:
        _write_defacemask(image, dst.parent, report)
    elif report.include_defacemask:
        report.warnings.append(f"{image.image}: no defacemask in output_dir; none exported")
    return entry


def _write_defacemask(image: ImageDecision, folder: Path, report: ExportReport) -> None:
    anat = image._anat
    entities = dict(anat.entities)
    extra = [key for key in entities if key not in _DEFACEMASK_ENTITIES]
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
    report.files[rel] = {"action": "added", "source": _relative(image._mask,
                                                                 report.output_dir),
                         **_nonempty(cleared)}


def _nonempty(cleared: dict[str, list]) -> dict[str, list]:
    renamed = {"header_fields": "header_fields_cleared", "extensions": "extensions_dropped",
               "gzip_header": "gzip_header_cleared"}
    return {renamed[k]: v for k, v in cleared.items() if v}


def _write_json(src: Path, dst: Path, fields: list[str], hardlink: bool) -> dict[str, Any]:
    data = _read_json(src)
    scrubbed, removed = scrub_metadata(data, fields)
    if not removed:
        return {"action": _link(src, dst, hardlink)}
    atomic_write_text(dst, _dumps(scrubbed))
    return {"action": "scrubbed", "removed_fields": removed}


def _write_description(src: Path, dst: Path, fields: list[str],
                       report: ExportReport) -> dict[str, Any]:
    from bidsapp.outputs import dataset_description

    data, removed = scrub_metadata(_read_json(src), fields)
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
    atomic_write_text(dst, _dumps(data))
    return {"action": "updated", "removed_fields": removed, "added_fields": ["GeneratedBy"]}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text ({exc.reason}); fix the file") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc}); it cannot be scrubbed: fix it") from None


def _dumps(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _write_nifti(src: Path, dst: Path, hardlink: bool) -> dict[str, Any]:
    found = nifti_identifiers(src)
    if not any(found.values()):
        return {"action": _link(src, dst, hardlink)}
    return {"action": "header-cleared", **_nonempty(clean_nifti(src, dst))}


def _write_scans(src: Path, dst: Path, rel: str, omitted: set[str],
                 hardlink: bool) -> dict[str, Any]:
    """A ``_scans.tsv`` without the rows of omitted images."""
    folder = rel.rsplit("/", 1)[0] if "/" in rel else ""
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
    columns = lines[0].rstrip("\r\n").split("\t") if lines else []
    if "filename" not in columns:
        return {"action": _link(src, dst, hardlink)}
    where = columns.index("filename")
    kept, dropped = lines[:1], 0
    for line in lines[1:]:
        cells = line.rstrip("\r\n").split("\t")
        name = cells[where] if len(cells) > where else ""
        if f"{folder}/{name}".lstrip("/") in omitted:
            dropped += 1
        else:
            kept.append(line)
    if not dropped:
        return {"action": _link(src, dst, hardlink)}
    atomic_write_text(dst, "".join(kept))
    return {"action": "rows-removed", "rows_removed": dropped}


def _warn_acq_time(src: Path, rel: str, report: ExportReport) -> None:
    try:
        with open(src, encoding="utf-8") as handle:
            columns = handle.readline().rstrip("\r\n").split("\t")
    except (OSError, UnicodeDecodeError):
        return
    if "acq_time" in columns:
        report.warnings.append(f"{rel}: its acq_time column (dates of the visits) is copied "
                               "unchanged; shift the dates before sharing if they identify "
                               "anyone")


def _prune(partial: Path, report: ExportReport, hardlink: bool) -> None:
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
    columns = lines[0].rstrip("\r\n").split("\t") if lines else []
    if column not in columns:
        return
    where = columns.index(column)
    kept = lines[:1] + [line for line in lines[1:]
                        if line.rstrip("\r\n").split("\t")[where] not in values]
    if len(kept) == len(lines):
        return
    table.unlink()  # it may be a hard link to the original: never write through it
    atomic_write_text(table, "".join(kept))
    rel = table.relative_to(partial).as_posix()
    report.files[rel] = {"action": "rows-removed", "rows_removed": len(lines) - len(kept)}


def _publish(partial: Path, export_dir: Path) -> None:
    """Move the finished copy into place (an existing empty ``export_dir`` is replaced)."""
    if export_dir.is_dir():
        export_dir.rmdir()  # only an empty folder gets here
    os.rename(partial, export_dir)


# --- NIfTI bytes ---------------------------------------------------------------------------

@dataclass
class _Prefix:
    header: Nifti1Header | Nifti2Header
    size: int  # 348 or 540
    text_fields: list[str]
    extensions: list[int]


def _open_nifti(path: Path) -> BinaryIO:
    real = Path(path).resolve()
    with open(real, "rb") as handle:
        magic = handle.read(2)
    return gzip.open(real, "rb") if magic == b"\x1f\x8b" else open(real, "rb")


@contextmanager
def _open_output(path: Path) -> Iterator[BinaryIO]:
    """Write ``path``, gzipped (no file name, zero time stamp) when it ends in ``.gz``."""
    with open(path, "wb") as raw:
        if str(path).endswith(".gz"):
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                               compresslevel=GZIP_LEVEL) as out:
                yield out
        else:
            yield raw


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise ValueError("truncated NIfTI header")
    return data


def _parse_prefix(stream: BinaryIO) -> _Prefix:
    """Read the header and extensions, leaving ``stream`` at the first voxel byte."""
    first = _read_exactly(stream, 4)
    size = next((n for n in (int.from_bytes(first, "little"), int.from_bytes(first, "big"))
                 if n in (348, 540)), None)
    if size is None:
        raise ValueError("not a NIfTI-1 or NIfTI-2 file")
    klass = Nifti1Header if size == 348 else Nifti2Header
    header = klass(first + _read_exactly(stream, size - 4), check=False)
    offset = int(header["vox_offset"])
    if offset < size + 4:
        raise ValueError(f"vox_offset {offset} is below {size + 4}: not a single-file NIfTI")
    rest = _read_exactly(stream, offset - size)  # extension flag, extensions, padding
    codes: list[int] = []
    if rest[:1] != b"\x00":
        byteswap = endian_codes["native"] != header.endianness
        try:
            extensions = klass.exts_klass.from_fileobj(io.BytesIO(rest[4:]), len(rest) - 4,
                                                       byteswap)
            codes = [int(ext.get_code()) for ext in extensions] or [-1]
        except Exception:  # noqa: BLE001 - unreadable extensions are dropped all the same
            codes = [-1]
    text = [name for name in NIFTI_TEXT_FIELDS if name in header
            and np.asarray(header.structarr[name]).tobytes().strip(b"\x00")]
    return _Prefix(header=header, size=size, text_fields=text, extensions=codes)


def _gzip_header_items(path: Path) -> list[str]:
    """What a gzip member header stores besides the data: file name, comment, extra, time."""
    with open(Path(path).resolve(), "rb") as handle:
        head = handle.read(10)
    if len(head) < 10 or head[:2] != b"\x1f\x8b":
        return []
    flags, items = head[3], []
    for bit, name in ((0x08, "file name"), (0x10, "comment"), (0x04, "extra field")):
        if flags & bit:
            items.append(name)
    if int.from_bytes(head[4:8], "little"):
        items.append("time stamp")
    return items
