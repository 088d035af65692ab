"""pydeface's method on a second engine: ``niimath -deface`` (Rorden's clean-room C tools).

niimath (PyPI ``niimath``, BSD-2, a wheel that carries the binary) registers pydeface's mean
head template to the image with its own affine engine (AFNI 3dAllineate-style, "fast" cost),
carries pydeface's face mask back to the image linearly and zeroes voxels where it is below 0.5.
Beside :mod:`bidsapp.defacers.facemask` (same template and mask, antspyx registration) it shows
how much of a template defacer's result comes from the registration engine.

niimath writes float32; bidsapp takes from it only which voxels it zeroed, and zeroes those in
the input as stored, so every other voxel, the dtype, scaling and header stay the input's. No
network is used. The runner's brain guard (on by default) restores anything near the brain.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from importlib.util import find_spec
from pathlib import Path

import nibabel as nib
import numpy as np

from bidsapp.defacers.base import (
    Availability, DefaceOutput, DefaceRequest, Defacer, remove_voxels,
)

TEMPLATE, FACE_MASK = "mean_reg2mean.nii.gz", "facemask.nii.gz"
#: Seconds allowed for ``niimath --version`` (it answers in milliseconds).
VERSION_TIMEOUT_S = 30


def niimath_executable() -> str | None:
    """The niimath binary: the one in the ``niimath`` wheel, else one on PATH (None: neither)."""
    spec = find_spec("niimath")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        for candidate in (Path(folder) / "bin" / "niimath", Path(folder) / "niimath"):
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    return shutil.which("niimath")


def niimath_version(executable: str) -> str:
    """The version the binary reports (``v1.0.20261016 ...`` becomes ``1.0.20261016``)."""
    proc = subprocess.run([executable, "--version"], capture_output=True, text=True,
                          timeout=VERSION_TIMEOUT_S, check=False)
    found = re.search(r"v(\d+(?:\.\d+)+)", proc.stdout + proc.stderr)
    if not found:
        raise RuntimeError(f"{executable} --version gave no version (exit code {proc.returncode})")
    return found.group(1)


class NiimathDeface(Defacer):
    """Remove pydeface's template face region after niimath's own affine registration."""

    name = "niimath"
    title = "pydeface face mask (niimath -deface registration)"
    summary = "pydeface's template face mask carried to the image by niimath's affine registration"
    citation = (
        "Rorden C, Webster M, Drake C, et al. (2024). niimath and fslmaths: replication as a "
        "method to enhance popular neuroimaging tools. Aperture Neuro 4. "
        "doi:10.52294/001c.94384 (engine); Gulban OF, et al. poldracklab/pydeface (template "
        "and face mask)."
    )
    license = "BSD-2-Clause (niimath); MIT (pydeface template and mask)"
    needs_brain_mask = False
    guard_by_default = True

    def availability(self) -> Availability:
        from bidsapp.anatomy.templates import pydeface_file

        executable = niimath_executable()
        if executable is None:
            return Availability(False, "the niimath binary was not found (pip install niimath, "
                                       "a dependency of bidsapp, or put niimath on PATH)")
        try:
            for name in (TEMPLATE, FACE_MASK):
                pydeface_file(name)
            return Availability(True, version=niimath_version(executable))
        except (FileNotFoundError, OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
            return Availability(False, str(exc))

    def deface(self, request: DefaceRequest) -> DefaceOutput:
        from bidsapp.anatomy.headsize import head_size, size_problem
        from bidsapp.anatomy.templates import pydeface_file

        image = request.image
        size = None
        if request.brain_mask is not None and request.brain_mask.any():
            size = head_size(request.brain_mask, image.header.get_zooms())
            problem = size_problem(size)
            if problem:
                raise RuntimeError(f"head outside what the template supports: {problem}")
        out_path = request.work_dir / "niimath_defaced.nii.gz"
        command = [niimath_executable() or "niimath", str(request.image_path), "-deface",
                   str(pydeface_file(TEMPLATE)), str(pydeface_file(FACE_MASK)), str(out_path)]
        proc = subprocess.run(command, capture_output=True, text=True, cwd=request.work_dir,
                              check=False)
        (request.work_dir / "niimath.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0 or not out_path.is_file():
            tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
            raise RuntimeError(f"niimath exited with {proc.returncode}: {tail}")
        removed = _zeroed_voxels(image, nib.load(str(out_path)))
        return DefaceOutput(
            data=remove_voxels(image, removed),
            parameters={
                **(size.record() if size else {}),
                "mask": "pydeface facemask.nii.gz, linear, removed where < 0.5 (niimath)",
                "registration": "niimath -deface default (affine, cost 'fast')",
                "removed_voxels": int(removed.sum()),
            },
            command=command,
            notes=["pydeface's template and face mask; FSL FLIRT replaced by niimath's affine "
                   "registration; the voxels niimath zeroed are zeroed in the input as stored"],
        )


def _zeroed_voxels(image: nib.Nifti1Image, result: nib.Nifti1Image) -> np.ndarray:
    """Voxels niimath set to zero that were not zero, after checking it kept the input's grid."""
    if result.shape[:3] != image.shape[:3] or not np.allclose(result.affine, image.affine,
                                                              atol=1e-4):
        raise RuntimeError(f"niimath wrote shape {result.shape} with affine\n{result.affine}, "
                           f"not the input's {image.shape}")
    original = np.asanyarray(image.dataobj)
    return (np.asanyarray(result.dataobj).reshape(original.shape) == 0) & (original != 0)
