"""AFNI's refacer as two external defacers: deface (zero the face) and reface (replace it)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bidsapp.defacers.base import DefaceRequest
from bidsapp.defacers.external.tool import ExternalDefacer, missing_data, probe_version


class AfniDeface(ExternalDefacer):
    """``@afni_refacer_run -mode_deface``: zeroes the face and ears of a shell warped from MNI.

    @FindAfniDsetPath looks for the template and the shell in the current directory first, so
    they are linked into the work dir from AFNI's folder (no ``afni`` GUI binary is needed).
    """

    name = "afnideface"
    title = "AFNI refacer (deface)"
    summary = "@afni_refacer_run -mode_deface: zeroes face and ears of a shell aligned from MNI"
    citation = ("Taylor PA, Glen DR, Chen G, Cox RW, et al. AFNI refacer (@afni_refacer_run); "
                "Cox RW (1996). AFNI. Comput Biomed Res 29:162-173.")
    license = "GPL-2.0-or-later (AFNI)"
    mode = "deface"
    executables = ("@afni_refacer_run", "tcsh")
    helpers = ("3dUnifize", "3dAllineate", "3dcalc", "3dcopy", "3dinfo", "3dnvals", "3dnewid",
               "3drefit", "3dBrickStat", "3dBlurInMask", "cat_matvec", "ccalc",
               "@FindAfniDsetPath", "@GetAfniPrefix", "ParseName", "@CheckForAfniDset")
    output = "afni.nii.gz"
    datasets = ("MNI152_2009_template_SSW.nii.gz", "afni_refacer_shell_sym_1.0.nii.gz")

    def data_dir(self) -> Path | None:
        """$BIDSAPP_AFNI_DATA, else the folder of @afni_refacer_run (AFNI's binaries)."""
        if os.environ.get("BIDSAPP_AFNI_DATA"):
            return Path(os.environ["BIDSAPP_AFNI_DATA"])
        exe = shutil.which("@afni_refacer_run")
        return Path(exe).resolve().parent if exe else None

    def missing(self) -> list[str]:
        return super().missing() + missing_data(self.data_dir(), self.datasets,
                                                "BIDSAPP_AFNI_DATA")

    def version(self) -> str | None:
        refacer = probe_version(["@afni_refacer_run", "-ver"]) or "unknown"
        return f"refacer {refacer} (AFNI {os.environ.get('BIDSAPP_AFNI_VERSION', 'unknown')})"

    def environment(self, request: DefaceRequest) -> dict[str, str]:
        env = super().environment(request)
        env.update(AFNI_DONT_LOGFILE="YES", AFNI_NIFTI_TYPE_WARN="NO")
        return env

    def prepare(self, request: DefaceRequest) -> None:
        folder = self.data_dir()
        for name in self.datasets:
            link = Path(request.work_dir) / name
            link.unlink(missing_ok=True)
            link.symlink_to(folder / name)

    def command(self, staged: str, request: DefaceRequest) -> list[str]:
        return ["@afni_refacer_run", "-input", staged, f"-mode_{self.mode}", "-prefix",
                self.output, "-no_images"]

    def parameters(self, request: DefaceRequest) -> dict:
        return {"mode": self.mode, "cost": "lpa", "shell": self.datasets[1]}


class AfniReface(AfniDeface):
    name = "afnireface"
    title = "AFNI refacer (reface)"
    summary = "@afni_refacer_run -mode_reface: replaces face and ears with a scaled average shell"
    mode = "reface"
