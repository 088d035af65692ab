"""Metadata scrubbing: identifying keys out of JSON files, rows of left-out data out of TSVs."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

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


def read_json(path: Path) -> Any:
    """A JSON file's content; ValueError that says how to fix a file that cannot be read."""
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text ({exc.reason}); fix the file") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc}); it cannot be scrubbed: fix it") from None


def dumps(data: Any) -> str:
    """The text a scrubbed JSON file is written with."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def rows_without(lines: list[str], column: str, drop: Callable[[str], bool]
                 ) -> tuple[list[str], int] | None:
    """A TSV's lines without the rows whose ``column`` cell ``drop`` accepts, and how many.

    None when the table has no such column (a short row's missing cell is ``""``).

    >>> rows_without(["id\\tage\\n", "sub-a\\t3\\n", "sub-b\\t4\\n"], "id", "sub-b".__eq__)
    (['id\\tage\\n', 'sub-a\\t3\\n'], 1)
    """
    columns = lines[0].rstrip("\r\n").split("\t") if lines else []
    if column not in columns:
        return None
    where = columns.index(column)
    kept = lines[:1]
    for line in lines[1:]:
        cells = line.rstrip("\r\n").split("\t")
        if not drop(cells[where] if len(cells) > where else ""):
            kept.append(line)
    return kept, len(lines) - len(kept)


def has_column(path: Path, column: str) -> bool:
    """Whether the TSV at ``path`` has ``column`` (False when it cannot be read)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return column in handle.readline().rstrip("\r\n").split("\t")
    except (OSError, UnicodeDecodeError):
        return False
