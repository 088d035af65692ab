"""Compare two bidsapp output folders: did a rerun, a cluster run or a new version reproduce?

Images are compared as uncompressed NIfTI bytes (gzip headers carry a time stamp), figures and
other files byte for byte, JSON records and TSV tables as values, apart from what is allowed to
differ between two runs of the same data: the measured cost (``wall_time_s``, ``cpu_time_s``,
``peak_rss_mb`` and the group columns derived from them, and ``shared_steps``: the cost of the
steps a record shares with others, such as the template registration, absent before bidsapp
computed it once per image) and bidsapp's own version string. Logs,
HTML reports (they show times and dates) and lock files are not compared, only listed when one
folder lacks them.

    python -m bidsapp.compare_runs FIRST SECOND [--ignore GLOB ...] [--new-key KEY ...]

``--new-key`` names a record key the second (newer) version adds, such as provenance an older
version did not write: it is left out of a second record whose first lacks it, and nothing else
is forgiven (a key either version changed still differs).

Exit status 0 when both folders hold the same outputs, 1 when anything differs.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import gzip
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

COST_FIELDS = ("wall_time_s", "cpu_time_s", "peak_rss_mb")
#: Record keys that only hold costs (of steps shared between records, of the metrics' parts).
COST_KEYS = ("shared_steps", "timings_s")
NOT_COMPARED = ("logs/*", "*.html", "*.lock", ".*")


@dataclass
class Comparison:
    """What two output folders share and where they differ (relative paths)."""

    same: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)
    only_first: list[str] = field(default_factory=list)
    only_second: list[str] = field(default_factory=list)
    not_compared: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not (self.different or self.only_first or self.only_second)

    def lines(self) -> list[str]:
        out = [f"DIFFERS       {p}" for p in self.different]
        out += [f"only in first  {p}" for p in self.only_first]
        out += [f"only in second {p}" for p in self.only_second]
        out.append(f"{len(self.same)} files equal, {len(self.different)} differ, "
                   f"{len(self.only_first) + len(self.only_second)} in one folder only, "
                   f"{len(self.not_compared)} not compared (logs, reports, locks)")
        return out


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _matches(rel: str, patterns) -> bool:
    return any(fnmatch.fnmatch(rel, pattern) for pattern in patterns)


def bidsapp_version(root: Path) -> str | None:
    """The bidsapp version a folder's dataset_description.json names, if any."""
    try:
        description = json.loads((root / "dataset_description.json").read_text())
    except (OSError, ValueError):
        return None
    for entry in description.get("GeneratedBy", []):
        if entry.get("Name") == "bidsapp":
            return entry.get("Version")
    return None


def is_cost(name: str) -> bool:
    """A record key or a flattened table column (``metrics.timings_s.faces``) holding a cost."""
    parts = name.split(".")
    return any(part in COST_KEYS for part in parts) or any(
        parts[-1] == f or parts[-1].startswith(f + "_") for f in COST_FIELDS)


def _normalise(value: Any, version: str | None) -> Any:
    if isinstance(value, dict):
        return {k: _normalise(v, version) for k, v in value.items() if not is_cost(k)}
    if isinstance(value, list):
        return [_normalise(v, version) for v in value]
    if isinstance(value, str) and version and version in value:
        return value.replace(version, "<bidsapp version>")
    return value


def _table(path: Path, version: str | None) -> list[dict[str, Any]]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [_normalise(row, version) for row in rows]


def _nifti_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _without_new(value: Any, older: Any, new_keys: tuple[str, ...]) -> Any:
    """``value`` without the ``new_keys`` that ``older`` (the same record, older) lacks."""
    if not (new_keys and isinstance(value, dict) and isinstance(older, dict)):
        return value
    return {k: _without_new(v, older.get(k), new_keys) for k, v in value.items()
            if k in older or k not in new_keys}


def same_file(first: Path, second: Path, versions: tuple[str | None, str | None],
              new_keys: tuple[str, ...] = ()) -> bool:
    """Whether two output files hold the same result (see the module docstring)."""
    name = first.name
    if name.endswith((".nii", ".nii.gz")):
        return _nifti_bytes(first) == _nifti_bytes(second)
    if name.endswith(".json"):
        older = json.loads(first.read_text())
        return (_normalise(older, versions[0]) == _normalise(
            _without_new(json.loads(second.read_text()), older, new_keys), versions[1]))
    if name.endswith(".tsv"):
        return _table(first, versions[0]) == _table(second, versions[1])
    return first.read_bytes() == second.read_bytes()


def compare_outputs(first: Path, second: Path, ignore: tuple[str, ...] = (),
                    new_keys: tuple[str, ...] = ()) -> Comparison:
    """Compare every file of two output folders with the same relative path."""
    first, second = Path(first), Path(second)
    versions = (bidsapp_version(first), bidsapp_version(second))
    skipped = NOT_COMPARED + tuple(ignore)
    a, b = _files(first), _files(second)
    result = Comparison()
    for rel in sorted(a | b):
        if _matches(rel, skipped):
            result.not_compared.append(rel)
        elif rel not in b:
            result.only_first.append(rel)
        elif rel not in a:
            result.only_second.append(rel)
        elif same_file(first / rel, second / rel, versions, new_keys):
            result.same.append(rel)
        else:
            result.different.append(rel)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bidsapp.compare_runs",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--ignore", action="append", default=[], metavar="GLOB",
                        help="relative paths not to compare (repeatable), e.g. 'logs/CITATION.*'")
    parser.add_argument("--new-key", action="append", default=[], metavar="KEY",
                        help="a record key only the second (newer) version writes (repeatable)")
    args = parser.parse_args(argv)
    for folder in (args.first, args.second):
        if not (folder / "dataset_description.json").is_file():
            parser.error(f"{folder} is not a bidsapp output folder (no dataset_description.json)")
    result = compare_outputs(args.first, args.second, tuple(args.ignore), tuple(args.new_key))
    print("\n".join(result.lines()))
    return 0 if result.identical else 1


if __name__ == "__main__":
    sys.exit(main())
