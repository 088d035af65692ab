"""Which paths of the input an export holds, and path arithmetic shared by its steps."""

from __future__ import annotations

import os
import re
from pathlib import Path

#: Top-level folders of bids_dir that are never exported (DICOMs, other tools' outputs).
EXCLUDED_FOLDERS = ("sourcedata", "derivatives")
#: Hidden files that are exported (every other name starting with "." is left out).
KEPT_HIDDEN = (".bidsignore",)


def is_exported(rel: str) -> bool:
    """Whether a path relative to bids_dir is part of the export (as the tree walk decides).

    >>> [is_exported(p) for p in ("sub-01/anat/a.nii", "sourcedata/x", ".git/y", ".bidsignore")]
    [True, False, False, True]
    """
    parts = rel.split("/")
    hidden = any(part.startswith(".") for part in parts) and rel not in KEPT_HIDDEN
    return not hidden and not (len(parts) > 1 and parts[0] in EXCLUDED_FOLDERS)


def sidecar(rel: str) -> str:
    """The JSON sidecar of a NIfTI path.

    >>> sidecar("sub-01/anat/sub-01_T1w.nii.gz")
    'sub-01/anat/sub-01_T1w.json'
    """
    return re.sub(r"\.nii(\.gz)?$", ".json", rel)


def inside(child: Path, parent: Path) -> bool:
    """Whether ``child`` is ``parent`` or below it, links resolved."""
    child, parent = child.resolve(), parent.resolve()
    return child == parent or parent in child.parents


def relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` (as given or resolved), POSIX style."""
    for base in (root, root.resolve()):
        try:
            return Path(os.path.abspath(path)).relative_to(base).as_posix()
        except ValueError:
            continue
    raise ValueError(f"{path} is not inside {root}")
