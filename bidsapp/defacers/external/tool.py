"""The shared part of every external defacer: stage the input, run one command, collect.

:class:`ExternalDefacer` checks at run time that the program and its data are there (and says
what is missing: they live in the bidsapp container), stages the input in the private
``work_dir`` (a symlink, or an uncompressed copy for SPM), runs one command line built as a
list with ``cwd=work_dir`` and its output captured in ``work_dir/tool.log``, and brings the
tool's output back onto the input's grid (:mod:`bidsapp.defacers.external.grid`).
"""

from __future__ import annotations

import gzip
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np

from bidsapp.defacers.base import (
    Availability, DefaceOutput, DefaceRequest, Defacer, find_executables,
)
from bidsapp.defacers.external.grid import collect_with_notes

#: Appended to every "not available" reason.
CONTAINER_HINT = "it runs in the bidsapp container (Docker/Podman image or Apptainer)"
#: Where each tool's output is logged, inside the work dir.
LOG_NAME = "tool.log"


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


def probe_version(command: list[str], pattern: str = r"(\d+(?:\.\d+)+)") -> str | None:
    """First match of ``pattern`` in a quick command's output (a version), or None."""
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(pattern, proc.stdout + proc.stderr)
    return match.group(1) if match else None


def missing_files(folder: Path | None, names: tuple[str, ...]) -> list[str]:
    if folder is None:
        return list(names)
    return [name for name in names if not (folder / name).is_file()]


def missing_data(folder: Path | None, names: tuple[str, ...], variable: str) -> list[str]:
    """One phrase naming the files of ``names`` not in ``folder`` (set by ``variable``)."""
    absent = missing_files(folder, names)
    if folder is None or not absent:
        return []
    return [f"not in {folder} ({variable}): {', '.join(absent)}"]



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
        return collect_with_notes(Path(request.work_dir) / self.output, request.image)

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
