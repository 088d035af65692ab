"""Run one defacer on one image in a child process, measured, guarded and recorded.

The parent (:func:`run_measured`) starts ``python -m bidsapp.defacers.runner SPEC.json`` and
reads the child's wall time and peak resident memory from ``os.wait4``, so each figure belongs
to that defacer alone (and to any tool it starts). The child (:func:`execute`) defaces the image,
applies the brain guard, and writes ``defaced.nii.gz``, ``altered.nii.gz`` and ``record.json``
into the spec's ``out_dir``. A defacer's failure is a record with ``status: failed``, never a
crash of the caller.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from bidsapp.child import run_child
from bidsapp.io import atomic_write_json, save_like

DEFACED, ALTERED, RECORD, LOG = "defaced.nii.gz", "altered.nii.gz", "record.json", "defacer.log"


def make_spec(*, defacer: str, image: Path, out_dir: Path, brain_mask: Path | None,
              guard: bool, guard_margin_mm: float, seed: int, threads: int,
              options: dict[str, Any] | None = None,
              transfer: dict[str, str] | None = None,
              registration: Path | None = None) -> dict[str, Any]:
    """The JSON-ready description of one run (also its provenance); ``registration``: the
    shared template registration (JSON) of the image, for a template defacer."""
    return {
        "defacer": defacer, "image": os.path.abspath(image),
        "out_dir": os.path.abspath(out_dir),
        "brain_mask": os.path.abspath(brain_mask) if brain_mask else None,
        "guard": bool(guard),
        "guard_margin_mm": float(guard_margin_mm), "seed": int(seed), "threads": int(threads),
        "options": dict(options or {}), "transfer": transfer,
        "registration": os.path.abspath(registration) if registration else None,
    }


def run_measured(spec: dict[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
    """Run ``spec`` in a child process; return its record with wall time and peak RSS added."""
    out_dir = Path(spec["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in (DEFACED, ALTERED, RECORD):
        (out_dir / stale).unlink(missing_ok=True)
    spec_path = out_dir / "spec.json"
    atomic_write_json(spec_path, spec)
    usage = run_child(["bidsapp.defacers.runner", str(spec_path)], log=out_dir / LOG,
                      cwd=out_dir, threads=spec["threads"], timeout=timeout)
    record = _read_record(out_dir, spec, usage.returncode)
    record["wall_time_s"] = usage.wall_time_s
    record["peak_rss_mb"] = usage.peak_rss_mb
    record["cpu_time_s"] = usage.cpu_time_s
    if spec.get("registration"):
        # computed once, outside this process, for every template defacer of the image
        cost = json.loads(Path(spec["registration"]).read_text()).get("cost")
        record["shared_steps"] = {"template_registration": cost}
    atomic_write_json(out_dir / RECORD, record)
    return record


def _read_record(out_dir: Path, spec: dict[str, Any], returncode: int) -> dict[str, Any]:
    path = out_dir / RECORD
    if path.is_file():
        record = json.loads(path.read_text())
        if returncode != 0 and record.get("status") == "ok":
            record.update(status="failed", error=f"the defacer process exited with {returncode}")
        return record
    tail = _log_tail(out_dir / LOG)
    return {"defacer": spec["defacer"], "status": "failed",
            "error": f"the defacer process died (exit code {returncode}) before writing a "
                     f"record{': ' + tail if tail else ''}"}


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def execute(spec: dict[str, Any]) -> dict[str, Any]:
    """Child side: deface, guard, write outputs and the record. Never raises."""
    from bidsapp.defacers import availability, get_defacer
    from bidsapp.defacers.base import DefaceRequest

    out_dir = Path(spec["out_dir"])
    name = spec["defacer"]
    record: dict[str, Any] = {"defacer": name, "status": "failed", "error": None,
                              "image": spec["image"], "seed": spec["seed"],
                              "threads": spec["threads"], "options": spec["options"]}
    try:
        defacer = get_defacer(name)
        found = availability(name)
        record.update(version=found.version, title=defacer.title, kind=defacer.kind)
        if not found.available:
            raise RuntimeError(f"{name} is not available here: {found.reason}")
        image = nib.load(spec["image"])
        brain = _load_mask(spec["brain_mask"], image) if spec["brain_mask"] else None
        original = np.asanyarray(image.dataobj)
        if spec.get("transfer"):
            output, mode = _transfer(spec, image), "carried-from-T1w"
        else:
            request = DefaceRequest(image=image, image_path=Path(spec["image"]),
                                    work_dir=out_dir / "tool", brain_mask=brain,
                                    seed=spec["seed"], threads=spec["threads"],
                                    options=spec["options"],
                                    guard_margin_mm=_guard_margin(spec), data=original,
                                    registration=_path(spec.get("registration")))
            request.work_dir.mkdir(exist_ok=True)
            output, mode = defacer.deface(request), "direct"
        defaced = np.asarray(output.data)
        if defaced.shape != original.shape:
            raise RuntimeError(f"{name} returned shape {defaced.shape}, input is {original.shape}")
        guard = _apply_guard(spec, image, brain, original, defaced)
        written = save_like(image, defaced, out_dir / DEFACED)
        altered = np.asanyarray(written.dataobj) != original
        save_like(image, altered.astype(np.uint8), out_dir / ALTERED, dtype=np.uint8)
        record.update(
            status="ok", mode=mode, command=output.command, parameters=output.parameters,
            notes=output.notes, guard=guard, altered_voxels=int(altered.sum()),
            altered_ml=round(float(altered.sum() * _voxel_ml(image)), 3),
        )
        if spec.get("transfer"):
            record["source_image"] = spec["transfer"]["source_image"]
    except Exception as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc()
    atomic_write_json(out_dir / RECORD, record)
    return record


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _voxel_ml(image: nib.Nifti1Image) -> float:
    return float(np.prod(image.header.get_zooms()[:3])) / 1000.0


def _load_mask(path: str, image: nib.Nifti1Image) -> np.ndarray:
    mask = np.asanyarray(nib.load(path).dataobj) > 0
    if mask.shape != image.shape[:3]:
        raise RuntimeError(f"brain mask {path} has shape {mask.shape}, image has {image.shape}")
    return mask


def _guard_margin(spec: dict[str, Any]) -> float | None:
    """The guard margin a defacer's own guard follows: the run's, None when the guard is off."""
    return float(spec["guard_margin_mm"]) if spec["guard"] else None


def _apply_guard(spec, image, brain, original, defaced) -> dict[str, Any]:
    """Restore original voxels inside the dilated brain mask when the guard is on."""
    from bidsapp.anatomy.brainmask import dilate_mm

    if not spec["guard"]:
        return {"applied": False}
    if brain is None:
        raise RuntimeError("the brain guard needs a brain mask")
    changed = defaced != original
    changed &= dilate_mm(brain, image.header.get_zooms(), spec["guard_margin_mm"], within=changed)
    defaced[changed] = original[changed]
    return {"applied": True, "margin_mm": spec["guard_margin_mm"],
            "restored_voxels": int(changed.sum())}


def _transfer(spec, image):
    """Deface a non-T1w image with the session T1w's altered-voxel mask, carried over rigidly."""
    from bidsapp.anatomy.coregister import carry_mask
    from bidsapp.defacers.base import DefaceOutput, remove_voxels

    transfer = spec["transfer"]
    source = nib.load(transfer["source_altered"])
    removed = carry_mask(np.asanyarray(source.dataobj) > 0, source.affine, image,
                         Path(transfer["transform"]))
    return DefaceOutput(data=remove_voxels(image, removed),
                        parameters={"source_image": transfer["source_image"],
                                    "transform": "rigid (antspyx, mutual information)"},
                        notes=[f"altered-voxel mask of {Path(transfer['source_image']).name} "
                               "carried over by rigid registration"])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text())
    record = execute(spec)
    if record["status"] != "ok":
        print(record.get("traceback") or record.get("error"), file=sys.stderr)
    return 0 if record["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
