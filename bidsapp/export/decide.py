"""What may be exported: checks on the request, and whether each image can be shipped.

An image is refused when its defacer failed, left no output, changed no voxel, wrote an image
off the input's grid, altered brain voxels, or when the group level's verdict is ``fail``.
``force`` ships the doubtful ones and leaves out those with no usable defaced image.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from bidsapp.bids import AnatImage
from bidsapp.export.paths import inside, relative
from bidsapp.export.report import ImageDecision
from bidsapp.outputs import output_path
from bidsapp.results.records import defacers_run

LOGGER = logging.getLogger("bidsapp.export")

#: The group level's verdicts: (image name, defacer) -> (verdict, reason).
Verdicts = Mapping[tuple[str, str], tuple[str, str]]


class ExportError(ValueError):
    """A request that cannot be exported as asked (the CLI reports it as a usage error)."""


def check_request(bids_dir: Path, output_dir: Path, export_dir: Path, defacer: str) -> None:
    """Raise :class:`ExportError` for a request that cannot work, before anything is written."""
    if not bids_dir.is_dir():
        raise ExportError(f"bids_dir {bids_dir} is not a folder; give the input BIDS dataset")
    if not output_dir.is_dir():
        raise ExportError(f"output_dir {output_dir} is not a folder; run the participant "
                          "level first")
    if not re.fullmatch(r"[A-Za-z0-9]+", defacer or ""):
        raise ExportError(f"defacer {defacer!r} is not a defacer name (letters and digits)")
    for name, other in (("bids_dir", bids_dir), ("output_dir", output_dir)):
        if inside(export_dir, other) or inside(other, export_dir):
            raise ExportError(f"export dir {export_dir} overlaps {name} {other}; export into "
                              "a new folder outside both")
    if export_dir.exists() and (not export_dir.is_dir() or any(export_dir.iterdir())):
        raise ExportError(f"export dir {export_dir} exists and is not an empty folder; "
                          "choose a new folder (an export never overwrites anything)")
    found = defacers_run(output_dir)
    if defacer not in found:
        have = ", ".join(sorted(found)) or "none"
        raise ExportError(f"output_dir {output_dir} holds no results of defacer {defacer!r} "
                          f"(results found: {have}); run the participant level with "
                          f"--defacers {defacer} first")


def image_name(path: Path) -> str:
    """A NIfTI file's name without its extension, the group tables' ``image`` key.

    >>> image_name(Path("sub-01/anat/sub-01_acq-se_T1w.nii.gz"))
    'sub-01_acq-se_T1w'
    """
    return Path(path).name.split(".nii")[0]


def decide_image(bids_dir: Path, output_dir: Path, image: AnatImage, defacer: str,
                 force: bool, verdicts: Verdicts | None = None) -> ImageDecision:
    """Whether ``image`` can be shipped with ``defacer``'s output, and why not."""
    decision = ImageDecision(image=relative(image.path, bids_dir), status="defaced",
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
        decision._defaced, decision.source = defaced, relative(defaced, output_dir)
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


def unchecked_warnings(decisions: list[ImageDecision], verdicts_given: bool) -> list[str]:
    """A warning for each shipped image whose brain or face removal was not checked."""
    warnings = []
    for image in decisions:
        if image.brain_check == "unavailable" and image.shipped:
            warnings.append(f"{image.image}: brain preservation not checked (no brain "
                            "metric in the record and no brain mask in output_dir)")
        if verdicts_given and image.shipped and image.verdict in (None, "n/a"):
            warnings.append(f"{image.image}: no group verdict (face removal and "
                            "re-identification not measured: rerun the participant "
                            "level without --skip-metrics)")
    return warnings


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


def _brain_altered(record: dict[str, Any], output_dir: Path, image: AnatImage,
                   altered_mask: Path | None) -> tuple[bool | None, int | None, str]:
    """Whether the defacer altered the brain, how many voxels, and where that comes from."""
    measured = _record_brain_metric(record)
    if measured is not None:
        return measured[0], measured[1], "record"
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


def _record_brain_metric(record: dict[str, Any]) -> tuple[bool, int | None] | None:
    """(altered, count) from the record's ``metrics`` (the metrics step's brain measures).

    The metrics step writes ``metrics.brain_changed_voxels`` and ``metrics.brain_altered``
    (:func:`bidsapp.metrics.brain.brain_preservation`); a record without them
    (``--skip-metrics``) gives None.
    """
    metrics = record.get("metrics")
    if not isinstance(metrics, dict):
        return None
    count = metrics.get("brain_changed_voxels")
    if isinstance(count, (int, float)) and not isinstance(count, bool):
        return count > 0, int(count)
    if isinstance(metrics.get("brain_altered"), bool):
        return metrics["brain_altered"], None
    return None
