"""The records of ``output_dir``: one JSON file per input image and per defacer result.

Records are ``sub-*/[ses-*/]anat/<entities>_desc-<name>_<suffix>.json``: ``desc-original`` is
the input's record, any other ``desc-`` a defacer's (:mod:`bidsapp.outputs` writes them). Every
level that reads results (the participant and group reports, the group level, the export, the
CLI) reads them through this module.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bidsapp.bids import ANAT_SUFFIXES, bids_stem, parse_name

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


def _record_name(name: str) -> tuple[dict[str, str], list[tuple[str, str]], str] | None:
    """Entities (as a dict and in order) and suffix of a record's file name; None otherwise.

    >>> _record_name("sub-01_desc-quickshear_T1w.json")[0]
    {'sub': '01', 'desc': 'quickshear'}
    >>> _record_name("sub-01_mod-T1w_desc-brain_mask.json") is None
    True
    """
    parsed = parse_name(name)
    if parsed is None:
        return None
    entities, suffix = parsed
    keys = dict(entities)
    if "mod" in keys or "desc" not in keys or "sub" not in keys or suffix not in ANAT_SUFFIXES:
        return None
    return keys, entities, suffix


def collect(output_dir: Path, subjects: Iterable[str] = ()) -> Collection:
    """Every input and defacer record under ``output_dir/sub-*/[ses-*/]anat/``.

    Records are ``<entities>_desc-<name>_<suffix>.json`` with an anatomical suffix and no ``mod-``
    entity; ``desc-original`` is the input's record, any other ``desc-`` a defacer's.
    """
    found = Collection()
    for path in _record_files(Path(output_dir), subjects):
        parsed = _record_name(path.name)
        if parsed is None:
            continue
        keys, entities, suffix = parsed
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
        except (OSError, ValueError, TypeError) as exc:
            found.problems.append(f"{path.relative_to(output_dir)}: unreadable record ({exc}); "
                                  "rerun the participant level for this participant")
            continue
        desc = keys["desc"]
        image = bids_stem([(k, v) for k, v in entities if k != "desc"], suffix)
        record = Record(path, keys["sub"], keys.get("ses"), image, suffix,
                        None if desc == "original" else desc, data)
        (found.inputs if desc == "original" else found.results).append(record)
    return found


def defacers_run(output_dir: Path, *, succeeded: bool = False) -> set[str]:
    """The defacers with a record under ``output_dir``; ``succeeded``: a successful one.

    The one place that decides which defacers ran (the export's request check, the CLI's choice
    of the defacer to export).
    """
    names = set()
    for path in _record_files(Path(output_dir), ()):
        parsed = _record_name(path.name)
        if parsed is None or parsed[0]["desc"] == "original":
            continue
        if succeeded:
            try:
                if json.loads(path.read_text()).get("status") != "ok":
                    continue
            except (OSError, ValueError, AttributeError):
                continue
        names.add(parsed[0]["desc"])
    return names


def defacer_order(names: Iterable[str]) -> list[str]:
    """Registry order for known defacers, then alphabetical."""
    from bidsapp.defacers import REGISTRY

    known = list(REGISTRY)
    names = set(names)
    return [n for n in known if n in names] + sorted(names - set(known))


def suffix_order(suffixes: Iterable[str]) -> list[str]:
    """Suffixes in bidsapp's reporting order (T1w, T2w, FLAIR, ...), unknown ones last."""
    rank = {name: i for i, name in enumerate(ANAT_SUFFIXES)}
    return sorted(set(suffixes), key=lambda s: (rank.get(s, len(rank)), s))


def image_order(images: Iterable[tuple[str, str]]) -> list[str]:
    """Image keys from (key, suffix) pairs: by subject, session, suffix order, then name."""
    rank = {name: i for i, name in enumerate(ANAT_SUFFIXES)}

    def key(item):
        image, suffix = item
        parts = dict(p.split("-", 1) for p in image.split("_")[:-1] if "-" in p)
        return (parts.get("sub", ""), parts.get("ses", ""), rank.get(suffix, len(rank)), image)

    return [image for image, _ in sorted(set(images), key=key)]


def subject_of(image: str) -> str:
    """The participant label of an image key (``sub-01_T1w`` -> ``01``)."""
    match = re.match(r"sub-([A-Za-z0-9]+)", str(image))
    return match.group(1) if match else ""


