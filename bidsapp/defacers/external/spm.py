"""SPM12's spm_deface (compiled standalone) as an external defacer."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bidsapp.defacers.base import DefaceRequest
from bidsapp.defacers.external.tool import ExternalDefacer


class SpmDeface(ExternalDefacer):
    """SPM12's ``spm_deface`` through the compiled standalone and the MATLAB Runtime.

    It writes ``anon_<input>.nii`` beside its input, with NaN below a plane in MNI space.
    """

    name = "spmdeface"
    title = "spm_deface"
    summary = "SPM12 spm_deface: affine to the TPMs, removes everything below a plane (MNI)"
    citation = "Ashburner J. spm_deface, SPM12. https://www.fil.ion.ucl.ac.uk/spm/"
    license = "GPL-2.0-or-later"
    uncompressed_input = True
    output = "anon_input.nii"

    def standalone(self) -> str | None:
        """run_spm12.sh: in $SPM_HOME, else on PATH."""
        if os.environ.get("SPM_HOME"):
            candidate = Path(os.environ["SPM_HOME"]) / "run_spm12.sh"
            return str(candidate) if candidate.is_file() else None
        return shutil.which("run_spm12.sh")

    def runtime(self) -> str | None:
        value = os.environ.get("MCR_HOME")
        return value if value and Path(value).is_dir() else None

    def missing(self) -> list[str]:
        lacking = []
        if not self.standalone():
            lacking.append("no SPM12 standalone (run_spm12.sh in $SPM_HOME or on PATH)")
        if not self.runtime():
            lacking.append("no MATLAB Runtime (MCR_HOME)")
        return lacking

    def version(self) -> str | None:
        return os.environ.get("BIDSAPP_SPM_VERSION")

    def environment(self, request: DefaceRequest) -> dict[str, str]:
        env = super().environment(request)
        env.update(MCR_CACHE_ROOT=str(Path(request.work_dir) / "mcr_cache"), SPM_HTML_BROWSER="0")
        return env

    def command(self, staged: str, request: DefaceRequest) -> list[str]:
        return [self.standalone(), self.runtime(), "function", "spm_deface", staged]
