"""What an export decided and did: one :class:`ImageDecision` per image, one :class:`ExportReport`.

The report is written beside the export, outside it (:func:`report_path`), and names fields
only, never their values.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bidsapp import __version__
from bidsapp.bids import AnatImage
from bidsapp.export.nifti import NIFTI_TEXT_FIELDS


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
                         "brain or failed the verdict are shipped, images with no defaced "
                         "version are left out)")
        for image in self.by_status("forced") + self.by_status("omitted"):
            lines.append(f"  {image.status} {image.image}: {'; '.join(image.reasons)}")
        lines += [f"  problem: {problem}" for problem in self.problems]
        lines += [f"  warning: {warning}" for warning in self.warnings]
        if self.report_path:
            lines.append(f"  report: {self.report_path}")
        return "\n".join(lines)


def report_path(export_dir: Path) -> Path:
    """Where the report of an export into ``export_dir`` goes: beside it, outside the copy.

    >>> report_path(Path("/data/share/ds001"))
    PosixPath('/data/share/ds001_deid-report.json')
    """
    export_dir = Path(os.path.abspath(export_dir))
    return export_dir.parent / f"{export_dir.name}_deid-report.json"
