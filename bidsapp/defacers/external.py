"""Defacers that are external programs: pydeface, mri_deface, fsl_deface, mridefacer, AFNI, SPM.

Each is a thin wrapper. It checks at run time that the program and its data are there (and
says what is missing when they are not: they live in the bidsapp container), stages the input
in the private ``work_dir`` (a symlink, or an uncompressed copy for SPM), runs one command line
built as a list with ``cwd=work_dir`` and its output captured in ``work_dir/tool.log``, and
brings the tool's output back onto the input's voxel grid and data type
(:func:`collect_on_input_grid`), so every metric compares like with like.

``python -m bidsapp.defacers.external [--require NAME ...]`` prints the availability table; the
container build runs it as a smoke test.
"""

from __future__ import annotations

import gzip
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform
from scipy import ndimage

from bidsapp.defacers.base import (
    Availability, DefaceOutput, DefaceRequest, Defacer, find_executables,
)
from bidsapp.io import _cast

#: Appended to every "not available" reason.
CONTAINER_HINT = "it runs in the bidsapp container (Docker/Podman image or Apptainer)"
#: Where each tool's output is logged, inside the work dir.
LOG_NAME = "tool.log"
#: Voxel-to-world matrices closer than this (mm) are the same grid.
GRID_ATOL = 1e-3

# --------------------------------------------------------------------------------------------
# Output collection


def collect_on_input_grid(output_path: Path | str, reference_img: nib.Nifti1Image) -> np.ndarray:
    """A tool's output image as an array on ``reference_img``'s grid and in its data type.

    NaN and infinities become 0 (spm_deface writes NaN outside the head). An output stored in
    another voxel order (fslreorient2std, FSL radiological) is permuted and flipped back
    exactly; any other change of grid is undone by nearest-neighbour resampling, with 0 outside
    the output's field of view. Integer types are rounded and clipped to their range.
    """
    return _collect(Path(output_path), reference_img)[0]


def _collect(path: Path, reference: nib.Nifti1Image) -> tuple[np.ndarray, list[str]]:
    """:func:`collect_on_input_grid` plus notes on what had to be done."""
    if not path.is_file():
        raise RuntimeError(f"the tool did not write {path.name}")
    image = nib.load(str(path))
    data = np.asanyarray(image.dataobj)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise RuntimeError(f"{path.name} has shape {image.shape}; expected one 3D volume")
    notes = []
    if data.dtype.kind == "f":
        bad = ~np.isfinite(data)
        if bad.any():
            data = np.where(bad, 0, data)
            notes.append(f"{path.name}: {int(bad.sum())} NaN/infinite voxels set to 0")
    data, note = _onto_grid(data, image.affine, reference)
    if note:
        notes.append(f"{path.name}: {note}")
    return _cast(np.asarray(data), _value_dtype(reference)), notes


def _value_dtype(image: nib.Nifti1Image) -> np.dtype:
    """The dtype ``np.asanyarray(image.dataobj)`` returns (the stored one unless scaled)."""
    corner = tuple(slice(0, 1) for _ in image.shape)
    return np.asanyarray(image.dataobj[corner]).dtype


def _onto_grid(data: np.ndarray, affine: np.ndarray,
               reference: nib.Nifti1Image) -> tuple[np.ndarray, str | None]:
    shape = reference.shape[:3]
    if data.shape == shape and np.allclose(affine, reference.affine, atol=GRID_ATOL):
        return data, None
    # Same voxel centres in another storage order: undo the permutation and flips exactly.
    transform = ornt_transform(io_orientation(affine), io_orientation(reference.affine))
    permuted = apply_orientation(data, transform)
    permuted_affine = affine @ inv_ornt_aff(transform, data.shape)
    if permuted.shape == shape and np.allclose(permuted_affine, reference.affine, atol=GRID_ATOL):
        return permuted, "stored in another voxel order; permuted back to the input's exactly"
    vox2vox = np.linalg.inv(affine) @ reference.affine
    resampled = ndimage.affine_transform(
        np.asarray(data, dtype=np.float64), vox2vox[:3, :3], offset=vox2vox[:3, 3],
        output_shape=shape, order=0, mode="constant", cval=0.0,
    )
    return resampled, (f"on another grid (shape {data.shape}); resampled onto the input's "
                       "with nearest neighbour")


# --------------------------------------------------------------------------------------------
# Running a tool


def stage_input(request: DefaceRequest, stem: str = "input", *, uncompressed: bool = False) -> str:
    """Put the input in the work dir (the original is read-only); return its name there.

    A symlink keeps the input's own bytes; ``uncompressed`` writes a plain ``.nii`` copy for
    tools that cannot read gzip (SPM).
    """
    work = Path(request.work_dir)
    source = Path(request.image_path).resolve()  # a DataLad/git-annex link resolves too
    gzipped = Path(request.image_path).name.endswith(".gz")
    if uncompressed:
        target = work / f"{stem}.nii"
        target.unlink(missing_ok=True)
        opener = gzip.open if gzipped else open
        with opener(source, "rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
    else:
        target = work / (stem + (".nii.gz" if gzipped else ".nii"))
        target.unlink(missing_ok=True)
        target.symlink_to(source)
    return target.name


def run_tool(command: list[str], work_dir: Path, env: dict[str, str]) -> None:
    """Run ``command`` in ``work_dir``, its output appended to ``tool.log`` there.

    Raises RuntimeError, with the log's last lines, when it cannot start or exits non-zero.
    """
    log = Path(work_dir) / LOG_NAME
    with open(log, "ab") as out:
        out.write(f"$ {shlex.join(command)}\n".encode())
        out.flush()
        try:
            proc = subprocess.run(command, cwd=work_dir, env=env, stdin=subprocess.DEVNULL,
                                  stdout=out, stderr=subprocess.STDOUT, check=False)
        except OSError as exc:
            raise RuntimeError(f"{command[0]} could not be started: {exc}") from exc
    if proc.returncode != 0:
        raise RuntimeError(f"{command[0]} exited with code {proc.returncode}; "
                           f"last lines of {log}:\n{log_tail(log)}")


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _probe(command: list[str], pattern: str = r"(\d+(?:\.\d+)+)") -> str | None:
    """First match of ``pattern`` in a quick command's output (a version), or None."""
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(pattern, proc.stdout + proc.stderr)
    return match.group(1) if match else None


def _missing_files(folder: Path | None, names: tuple[str, ...]) -> list[str]:
    if folder is None:
        return list(names)
    return [name for name in names if not (folder / name).is_file()]


def _fsl_dir() -> Path | None:
    value = os.environ.get("FSLDIR")
    return Path(value) if value and Path(value).is_dir() else None


def _fsl_version() -> str | None:
    """FSL's release: $BIDSAPP_FSL_VERSION (set in the container), else $FSLDIR/etc/fslversion."""
    if os.environ.get("BIDSAPP_FSL_VERSION"):
        return os.environ["BIDSAPP_FSL_VERSION"]
    fsl = _fsl_dir()
    try:
        return (fsl / "etc" / "fslversion").read_text().split(":")[0].strip() if fsl else None
    except OSError:
        return None


def _fsl_missing(programs: tuple[str, ...]) -> list[str]:
    """What an FSL-based tool misses: FSLDIR, or programs in $FSLDIR/bin."""
    fsl = _fsl_dir()
    if fsl is None:
        return ["FSLDIR is not set to an FSL installation"]
    absent = [name for name in programs if not (fsl / "bin" / name).is_file()]
    return [f"not in $FSLDIR/bin: {', '.join(absent)}"] if absent else []


class ExternalDefacer(Defacer):
    """An external program run once per image; subclasses build its command line.

    Subclasses set ``executables`` and ``helpers`` (looked up on PATH), ``output`` (the file
    the command writes in the work dir, which is collected) and implement :meth:`command`; they
    may add requirements in :meth:`missing` and a version in :meth:`version`.
    """

    kind = "external"
    executables: tuple[str, ...] = ()
    #: Programs the tool calls, checked once ``executables`` are all found.
    helpers: tuple[str, ...] = ()
    output: str = "defaced.nii.gz"
    #: Stage the input as an uncompressed .nii (SPM cannot read .nii.gz).
    uncompressed_input = False

    def missing(self) -> list[str]:
        """What this machine lacks to run the tool, one phrase each (empty: nothing)."""
        _, absent = find_executables(*self.executables)
        if not absent:  # the programs it calls matter once the tool itself is there
            _, absent = find_executables(*self.helpers)
        return [f"not on PATH: {', '.join(absent)}"] if absent else []

    def version(self) -> str | None:  # pragma: no cover - overridden where a version is known
        return None

    def availability(self) -> Availability:
        lacking = self.missing()
        if lacking:
            return Availability(False, f"{self.title}: {'; '.join(lacking)}; {CONTAINER_HINT}")
        return Availability(True, version=self.version() or "unknown")

    def command(self, staged: str, request: DefaceRequest) -> list[str]:
        raise NotImplementedError  # pragma: no cover

    def parameters(self, request: DefaceRequest) -> dict:
        return {}

    def environment(self, request: DefaceRequest) -> dict[str, str]:
        """The tool's environment: ours, with temporary files and threads kept in bounds."""
        env = dict(os.environ)
        env.update(TMPDIR=str(request.work_dir), OMP_NUM_THREADS=str(max(1, request.threads)))
        env.setdefault("FSLOUTPUTTYPE", "NIFTI_GZ")
        return env

    def prepare(self, request: DefaceRequest) -> None:
        """Anything the tool needs in the work dir besides the input (nothing by default)."""

    def collect(self, request: DefaceRequest) -> tuple[np.ndarray, list[str]]:
        return _collect(Path(request.work_dir) / self.output, request.image)

    def deface(self, request: DefaceRequest) -> DefaceOutput:
        lacking = self.missing()
        if lacking:
            raise RuntimeError(f"{self.name} cannot run here: {'; '.join(lacking)}")
        work = Path(request.work_dir)
        work.mkdir(parents=True, exist_ok=True)
        staged = stage_input(request, uncompressed=self.uncompressed_input)
        self.prepare(request)
        command = self.command(staged, request)
        run_tool(command, work, self.environment(request))
        data, notes = self.collect(request)
        return DefaceOutput(data=data, parameters=self.parameters(request), command=command,
                            notes=notes)


# --------------------------------------------------------------------------------------------
# FSL-based tools


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
        return super().missing() + _fsl_missing(("flirt",))

    def version(self) -> str | None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            own = version("pydeface")
        except PackageNotFoundError:
            own = _probe(["pydeface", "--help"], r"pydeface (\S+)") or "unknown"
        return f"{own} (FSL {_fsl_version() or 'unknown'})"

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
        lacking = super().missing() + _fsl_missing(self.fsl_programs)
        fsl = _fsl_dir()
        absent = _missing_files(fsl / "data" / "standard" if fsl else None, self.fsl_data)
        if fsl and absent:
            lacking.append(f"not in $FSLDIR/data/standard: {', '.join(absent)}")
        return lacking

    def version(self) -> str | None:
        return f"FSL {_fsl_version() or 'unknown'}"

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
        lacking = super().missing() + _fsl_missing(self.fsl_programs)
        folder = self.data_dir()
        absent = _missing_files(folder, self.templates)
        if folder is not None and absent:
            lacking.append(f"not in {folder} (MRIDEFACER_DATA_DIR): {', '.join(absent)}")
        return lacking

    def version(self) -> str | None:
        own = (os.environ.get("BIDSAPP_MRIDEFACER_VERSION")
               or _probe(["mridefacer", "--version"], r"mridefacer (\S+)"))
        return f"{own or 'unknown'} (FSL {_fsl_version() or 'unknown'})"

    def prepare(self, request: DefaceRequest) -> None:
        (Path(request.work_dir) / "out").mkdir(exist_ok=True)

    def command(self, staged: str, request: DefaceRequest) -> list[str]:
        return ["mridefacer", "--no-color", "--outdir", "out", staged]

    def collect(self, request: DefaceRequest) -> tuple[np.ndarray, list[str]]:
        keep, notes = _collect(Path(request.work_dir) / self.output, request.image)
        original = np.asanyarray(request.image.dataobj)
        data = np.where(keep > 0, original, np.zeros((), dtype=original.dtype))
        return data.astype(original.dtype, copy=False), notes + [
            "mridefacer's keep-mask applied to the input on the input's grid"]

    def parameters(self, request: DefaceRequest) -> dict:
        return {"mask_threshold": 0.5, "applied_by": "bidsapp (mask brought onto the input grid)"}


# --------------------------------------------------------------------------------------------
# FreeSurfer mri_deface


class MriDeface(ExternalDefacer):
    name = "mrideface"
    title = "mri_deface"
    summary = "FreeSurfer's mri_deface: GCA atlas registration, zeroes face voxels off the brain"
    citation = ("Bischoff-Grethe A, Ozyurt IB, Busa E, et al. (2007). A technique for the "
                "deidentification of structural brain MR images. Hum Brain Mapp 28:892-903.")
    license = "FreeSurfer license"
    atlases = ("talairach_mixed_with_skull.gca", "face.gca")

    def data_dir(self) -> Path | None:
        """$BIDSAPP_MRIDEFACE_DIR, else $FREESURFER_HOME/average."""
        if os.environ.get("BIDSAPP_MRIDEFACE_DIR"):
            return Path(os.environ["BIDSAPP_MRIDEFACE_DIR"])
        if os.environ.get("FREESURFER_HOME"):
            return Path(os.environ["FREESURFER_HOME"]) / "average"
        return None

    def executable(self) -> str | None:
        folder = self.data_dir()
        if folder is not None and (folder / "mri_deface").is_file():
            return str(folder / "mri_deface")
        return shutil.which("mri_deface")

    def missing(self) -> list[str]:
        lacking = [] if self.executable() else ["no mri_deface binary"]
        folder = self.data_dir()
        absent = _missing_files(folder, self.atlases)
        if absent:
            where = (f"in {folder}" if folder else
                     "(set BIDSAPP_MRIDEFACE_DIR to their folder, or FREESURFER_HOME)")
            lacking.append(f"atlases not found {where}: {', '.join(absent)}")
        return lacking

    def version(self) -> str | None:
        return os.environ.get("BIDSAPP_MRIDEFACE_VERSION")

    def command(self, staged: str, request: DefaceRequest) -> list[str]:
        folder = self.data_dir()
        return [self.executable(), staged, *(str(folder / name) for name in self.atlases),
                self.output]


# --------------------------------------------------------------------------------------------
# AFNI


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
        lacking = super().missing()
        folder = self.data_dir()
        absent = _missing_files(folder, self.datasets)
        if folder is not None and absent:
            lacking.append(f"not in {folder} (BIDSAPP_AFNI_DATA): {', '.join(absent)}")
        return lacking

    def version(self) -> str | None:
        refacer = _probe(["@afni_refacer_run", "-ver"]) or "unknown"
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


# --------------------------------------------------------------------------------------------
# SPM


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


#: Every external defacer, in the registry's order.
EXTERNAL_DEFACERS = (PyDeface, MriDeface, FslDeface, MriDefacer, AfniDeface, AfniReface,
                     SpmDeface)


def main(argv: list[str] | None = None) -> int:
    """Print each external defacer's availability; exit 1 if a ``--require``d one is missing."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bidsapp.defacers.external",
                                     description=main.__doc__)
    names = [cls.name for cls in EXTERNAL_DEFACERS]
    parser.add_argument("--require", nargs="+", default=[], choices=names + ["all"],
                        metavar="NAME", help=f"fail unless these are available: {names} or all")
    args = parser.parse_args(argv)
    required = set(names) if "all" in args.require else set(args.require)
    failed = []
    for cls in EXTERNAL_DEFACERS:
        found = cls().availability()
        state = f"available, version {found.version}" if found.available else found.reason
        print(f"{cls.name:12s} {state}")
        if cls.name in required and not found.available:
            failed.append(cls.name)
    if failed:
        print(f"required but not available: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
