"""The one settings object, built by the CLI and passed down; saved with the outputs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know, frozen once the command line is parsed."""

    bids_dir: Path
    output_dir: Path
    analysis_level: str
    work_dir: Path
    participant_labels: tuple[str, ...] = ()
    session_labels: tuple[str, ...] = ()
    modalities: tuple[str, ...] = ()
    defacers: tuple[str, ...] = ()
    #: "auto" follows each defacer's default; "on" or "off" forces the guard for every defacer.
    brain_guard: str = "auto"
    guard_margin_mm: float = 5.0
    ears: bool = False
    reface: bool = False
    seed: int = 42
    nprocs: int = 1
    omp_nthreads: int = 1
    mem_gb: float | None = None
    verbosity: int = 0
    skip_metrics: bool = False
    show_faces: bool = False
    skip_identification: bool = False
    export_dir: Path | None = None
    export_defacer: str | None = None
    export_force: bool = False
    export_defacemask: bool = False
    export_copy: bool = False
    scrub_fields: tuple[str, ...] = ()
    keep_fields: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def guard_for(self, guard_by_default: bool) -> bool:
        """Whether the brain guard applies to a defacer whose own default is ``guard_by_default``."""
        if self.brain_guard == "auto":
            return guard_by_default
        return self.brain_guard == "on"

    def as_json(self) -> dict[str, Any]:
        """JSON-ready view (paths as strings), for provenance."""
        out = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[item.name] = value
        return out
