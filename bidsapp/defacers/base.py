"""What every defacer provides, and the steps they all share.

A defacer is a small object in the registry (:mod:`bidsapp.defacers`). It says whether it can
run here (and why not), its version, and how to deface one 3D image. The runner
(:mod:`bidsapp.defacers.runner`) calls it in a child process, so that its wall time and peak
memory are its own, then applies the brain guard and writes the results.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import nibabel as nib
import numpy as np


@dataclass(frozen=True)
class Availability:
    """Whether a defacer can run on this machine; ``reason`` says why not."""

    available: bool
    reason: str = ""
    version: str | None = None


@dataclass(frozen=True)
class DefaceRequest:
    """Everything a defacer may use to deface one image.

    ``image`` is the input as loaded (never written to). ``brain_mask`` is a boolean array on the
    image's grid (deepbet on the original), or None. ``work_dir`` is a private scratch folder
    (external tools run there). ``options`` carries defacer-specific flags (``ears``, ``reface``).
    ``guard_margin_mm`` is the run's brain guard margin (``--guard-margin-mm``), None when the
    guard is off (``--brain-guard off``, or auto for a defacer without one): a defacer with its
    own guard (facecut) follows it. ``data``, when given, is ``np.asanyarray(image.dataobj)``
    as the runner read it (read once per process; never written to). ``registration``: the
    JSON of pydeface's template registered to this image, computed once for every template
    defacer (:func:`template_registration`), or None.
    """

    image: nib.Nifti1Image
    image_path: Path
    work_dir: Path
    brain_mask: np.ndarray | None = None
    seed: int = 42
    threads: int = 1
    options: Mapping[str, Any] = field(default_factory=dict)
    guard_margin_mm: float | None = 5.0
    data: np.ndarray | None = None
    registration: Path | None = None

    def voxels(self) -> np.ndarray:
        """The image's voxels (scaled), read from disk only when the runner did not."""
        return np.asanyarray(self.image.dataobj) if self.data is None else self.data


@dataclass
class DefaceOutput:
    """A defacer's answer: the defaced voxel array on exactly the input's grid.

    ``data`` has the input's shape; the runner casts it to the input's on-disk dtype. ``command``
    is the command line of an external tool (None for an in-process one); ``parameters`` are the
    settings that produced the result; ``notes`` are human-readable remarks for the record.
    """

    data: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)
    command: list[str] | None = None
    notes: list[str] = field(default_factory=list)


class Defacer:
    """Base class of the registry's entries.

    Subclasses set ``name`` (alphanumeric; it is also the BIDS ``desc-`` label), ``title``,
    ``summary`` (one line for ``--help``), ``needs_brain_mask`` and ``guard_by_default``, and
    implement :meth:`availability` and :meth:`deface`.
    """

    name: str = ""
    title: str = ""
    summary: str = ""
    citation: str = ""
    license: str = ""
    needs_brain_mask: bool = False
    guard_by_default: bool = False
    #: Registers pydeface's template to the image (:func:`template_registration`): the workflow
    #: computes it once per image for every such defacer.
    uses_template_registration: bool = False
    #: "native" runs with pip alone; "external" needs a toolkit that lives in the container.
    kind: str = "native"

    def availability(self) -> Availability:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def deface(self, request: DefaceRequest) -> DefaceOutput:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<Defacer {self.name}>"


def remove_voxels(image: nib.Nifti1Image, removed: np.ndarray) -> np.ndarray:
    """Return the image's voxel values with ``removed`` voxels set to 0 (the stored dtype)."""
    data = np.asanyarray(image.dataobj).copy()
    if data.shape != removed.shape:
        raise ValueError(f"mask shape {removed.shape} does not match image shape {data.shape}")
    data[removed.astype(bool)] = 0
    return data


def template_registration(request: DefaceRequest):
    """(registration, HeadSize or None) of pydeface's template to the request's image: the
    shared one when the workflow computed it, else computed here (same settings, same result)."""
    from bidsapp.anatomy.headsize import checked_registration, load_checked_registration

    if request.registration is not None:
        return load_checked_registration(request.registration)
    return checked_registration(request.image, request.brain_mask, seed=request.seed,
                                work_dir=request.work_dir, data=request.data)


def python_module_version(module: str, distribution: str | None = None) -> Availability:
    """Availability of a defacer that needs only an installed Python distribution.

    Looks the module up without importing it (importing torch would cost seconds and memory).
    ``distribution`` (the pip name, when not the module's) spares the scan of every installed
    distribution (about a second).
    """
    from importlib.metadata import PackageNotFoundError, version
    from importlib.util import find_spec

    if find_spec(module) is None:
        return Availability(False, f"Python package '{module}' is not installed "
                                   f"(pip install {module})")
    for name in dict.fromkeys([distribution or module, module]):
        try:
            return Availability(True, version=version(name))
        except PackageNotFoundError:
            continue
    from importlib.metadata import packages_distributions

    for name in packages_distributions().get(module, []):
        try:
            return Availability(True, version=version(name))
        except PackageNotFoundError:
            continue
    return Availability(True, version="unknown")


def template_defacer_availability(*template_files: str) -> Availability:
    """Availability of a defacer built on antspyx and data files of the pydeface wheel."""
    from bidsapp.anatomy.templates import pydeface_file

    status = python_module_version("ants", "antspyx")
    if not status.available:
        return status
    try:
        for name in template_files:
            pydeface_file(name)
    except FileNotFoundError as exc:
        return Availability(False, str(exc))
    return status


def find_executables(*names: str) -> tuple[dict[str, str], list[str]]:
    """Locate executables on PATH; returns (found name -> path, missing names)."""
    found, missing = {}, []
    for exe in names:
        path = shutil.which(exe)
        if path:
            found[exe] = path
        else:
            missing.append(exe)
    return found, missing
