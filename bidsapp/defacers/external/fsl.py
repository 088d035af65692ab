"""The FSL-based external defacers: pydeface, fsl_deface and mridefacer."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from bidsapp.defacers.base import DefaceRequest
from bidsapp.defacers.external.grid import collect_with_notes
from bidsapp.defacers.external.tool import (
    ExternalDefacer, missing_data, missing_files, probe_version,
)


def fsl_dir() -> Path | None:
    value = os.environ.get("FSLDIR")
    return Path(value) if value and Path(value).is_dir() else None


def fsl_version() -> str | None:
    """FSL's release: $BIDSAPP_FSL_VERSION (set in the container), else $FSLDIR/etc/fslversion."""
    if os.environ.get("BIDSAPP_FSL_VERSION"):
        return os.environ["BIDSAPP_FSL_VERSION"]
    fsl = fsl_dir()
    try:
        return (fsl / "etc" / "fslversion").read_text().split(":")[0].strip() if fsl else None
    except OSError:
        return None


def fsl_missing(programs: tuple[str, ...]) -> list[str]:
    """What an FSL-based tool misses: FSLDIR, or programs in $FSLDIR/bin."""
    fsl = fsl_dir()
    if fsl is None:
        return ["FSLDIR is not set to an FSL installation"]
    absent = [name for name in programs if not (fsl / "bin" / name).is_file()]
    return [f"not in $FSLDIR/bin: {', '.join(absent)}"] if absent else []



class PyDeface(ExternalDefacer):
    name = "pydeface"
    title = "pydeface"
    summary = "FLIRT registers a template to the image and zeroes its warped face mask (FSL)"
    citation = ("Gulban OF, Nielson D, Poldrack R, Lee J, Gorgolewski C, Vanessa S, Ghosh S "
                "(2019). poldracklab/pydeface. Zenodo. doi:10.5281/zenodo.3524401")
    license = "MIT"
    executables = ("pydeface", "fsl", "flirt")
    output = "defaced.nii.gz"
    cost = "mutualinfo"

    def missing(self) -> list[str]:
        return super().missing() + fsl_missing(("flirt",))

    def version(self) -> str | None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            own = version("pydeface")
        except PackageNotFoundError:
            own = probe_version(["pydeface", "--help"], r"pydeface (\S+)") or "unknown"
        return f"{own} (FSL {fsl_version() or 'unknown'})"

    def command(self, staged: str, request: DefaceRequest) -> list[str]:
        return ["pydeface", staged, "--outfile", self.output, "--force", "--cost", self.cost]

    def parameters(self, request: DefaceRequest) -> dict:
        return {"cost": self.cost, "template": "pydeface default (mean_reg2mean + facemask)"}


class FslDeface(ExternalDefacer):
    name = "fsldeface"
    title = "fsl_deface"
    summary = "FSL's defacing (UK Biobank): BET + FLIRT to MNI, removes a face and ear mask"
    citation = ("Alfaro-Almagro F, et al. (2018). Image processing and Quality Control for the "
                "first 10,000 brain imaging datasets from UK Biobank. NeuroImage 166:400-424.")
    license = "FSL licence (non-commercial)"
    executables = ("fsl_deface",)
    #: fsl_deface calls these from $FSLDIR/bin.
    fsl_programs = ("bet", "flirt", "fslmaths", "robustfov", "convert_xfm")
    #: and registers to these, in $FSLDIR/data/standard.
    fsl_data = ("MNI152_T1_1mm.nii.gz", "MNI152_T1_1mm_BigFoV_facemask.nii.gz")

    def missing(self) -> list[str]:
        lacking = super().missing() + fsl_missing(self.fsl_programs)
        fsl = fsl_dir()
        absent = missing_files(fsl / "data" / "standard" if fsl else None, self.fsl_data)
        if fsl and absent:
            lacking.append(f"not in $FSLDIR/data/standard: {', '.join(absent)}")
        return lacking

    def version(self) -> str | None:
        return f"FSL {fsl_version() or 'unknown'}"

    def command(self, staged: str, request: DefaceRequest) -> list[str]:
        return ["fsl_deface", staged, self.output]


class MriDefacer(ExternalDefacer):
    """mridefacer writes a keep-mask (1 = keep) in fslreorient2std order; we apply it.

    Its own ``--apply`` multiplies the input, in its stored voxel order, by that mask, which is
    only right for inputs already in FSL's standard order; so the mask is brought back onto the
    input's grid first and the input's other voxels are zeroed here.
    """

    name = "mridefacer"
    title = "mridefacer"
    summary = "FLIRT of a head template (FSL) carries a face, teeth and ear mask onto the image"
    citation = "Hanke M (2015). mridefacer. https://github.com/mih/mridefacer"
    license = "MIT"
    executables = ("mridefacer", "bc", "getopt")
    output = "out/input_defacemask.nii.gz"
    fsl_programs = ("fslreorient2std", "fslinfo", "fslroi", "imln", "bet", "fslmaths", "flirt",
                    "remove_ext", "imcp", "imtest", "numbound")
    templates = ("head_tmpl_brain.nii.gz", "head_tmpl_weights.nii.gz",
                 "face_teeth_ear_mask.nii.gz")

    def data_dir(self) -> Path | None:
        if os.environ.get("MRIDEFACER_DATA_DIR"):
            return Path(os.environ["MRIDEFACER_DATA_DIR"])
        exe = shutil.which("mridefacer")
        return Path(exe).resolve().parent / "data" if exe else None

    def missing(self) -> list[str]:
        return (super().missing() + fsl_missing(self.fsl_programs)
                + missing_data(self.data_dir(), self.templates, "MRIDEFACER_DATA_DIR"))

    def version(self) -> str | None:
        own = (os.environ.get("BIDSAPP_MRIDEFACER_VERSION")
               or probe_version(["mridefacer", "--version"], r"mridefacer (\S+)"))
        return f"{own or 'unknown'} (FSL {fsl_version() or 'unknown'})"

    def prepare(self, request: DefaceRequest) -> None:
        (Path(request.work_dir) / "out").mkdir(exist_ok=True)

    def command(self, staged: str, request: DefaceRequest) -> list[str]:
        return ["mridefacer", "--no-color", "--outdir", "out", staged]

    def collect(self, request: DefaceRequest) -> tuple[np.ndarray, list[str]]:
        keep, notes = collect_with_notes(Path(request.work_dir) / self.output, request.image)
        original = np.asanyarray(request.image.dataobj)
        data = np.where(keep > 0, original, np.zeros((), dtype=original.dtype))
        return data.astype(original.dtype, copy=False), notes + [
            "mridefacer's keep-mask applied to the input on the input's grid"]

    def parameters(self, request: DefaceRequest) -> dict:
        return {"mask_threshold": 0.5, "applied_by": "bidsapp (mask brought onto the input grid)"}
