"""Measure every defacer's result for one image, reusing what depends on the original.

Two stages, each a workflow step in a child process of its own:

* ``python -m bidsapp.metrics.measure original SPEC.json``: the input's face check and IQMs
  (one JSON), and what every result is compared with, computed once (the original's brain mask
  and margin, skin surface, renders and face detection, tissue segmentation, IQM masks), kept
  in the step's folder (:func:`save_original`);
* ``python -m bidsapp.metrics.measure results SPEC.json``, once the defacers are done: for each
  defacer that succeeded, its defacing metrics
  (:func:`bidsapp.metrics.defacing.measure_defaced`) and IQMs in both modes
  (:func:`bidsapp.metrics.iqms.defaced.record_iqms`), with the seconds each metric group took.

The original's stage runs beside the defacers (it needs only the brain mask); the results
share one process per image, as starting one per result costs more (about 5 s of imports and
reading the kept original each) than measuring the results side by side saves on two cores.

``python -m bidsapp.metrics.measure SPEC.json`` runs both for one image in one process
(:func:`measure_image`).
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from bidsapp.io import atomic_write_json, load_once


def _attempt(errors: dict[str, str], tracebacks: dict[str, str], family: str, function,
             *args, **kwargs):
    """``function(*args, **kwargs)``, or None with the reason recorded under ``family``."""
    try:
        return function(*args, **kwargs)
    except Exception as exc:
        text = str(exc).strip().splitlines()
        errors[family] = f"{type(exc).__name__}: {text[0][:300] if text else ''}".rstrip(": ")
        tracebacks[family] = traceback.format_exc()
        return None


@dataclass
class MeasuredOriginal:
    """What the original's stage leaves for the results' stage: the record of the input, the
    references both metric families share (None when they failed) and why they failed."""

    input: dict[str, Any]
    reference: Any = None  # bidsapp.metrics.reference.OriginalReference
    iqm_reference: Any = None  # bidsapp.metrics.iqms.image.ImageIQMs
    template: dict | None = None
    errors: dict[str, str] = field(default_factory=dict)
    threads: int = 1
    seed: int = 42


def measure_original(image_path: Path, brain_mask_path: Path, *, threads: int = 1,
                     seed: int = 42) -> MeasuredOriginal:
    """The original's stage: its face check and IQMs, and what every result is compared with
    (brain mask and margin, skin, face regions, renders and detection, tissues, IQM masks)."""
    from bidsapp.metrics.defacing import input_face_check
    from bidsapp.metrics.iqms.defaced import record_iqms
    from bidsapp.metrics.iqms.image import image_iqms
    from bidsapp.metrics.orientation import orientation_check
    from bidsapp.metrics.reference import OriginalReference

    image = load_once(image_path)  # read by each family and for each defacer
    brain = np.asanyarray(nib.load(str(brain_mask_path)).dataobj) > 0
    start = time.perf_counter()
    errors: dict[str, str] = {}
    tracebacks: dict[str, str] = {}
    reference = _attempt(errors, tracebacks, "face", OriginalReference.build, image, brain,
                         threads=threads, seed=seed)
    found: dict[str, Any] = {}
    iqm_reference = None
    if reference is not None:
        found = input_face_check(reference)
        if _no_orientation(image):
            found["orientation_check"] = orientation_check(
                reference.skin.head, reference.brain_world, reference.grid.spacing)
        # the IQMs register the template once; its tissue maps name the classes (T2w, FLAIR)
        # for the downstream volumes too
        iqm_reference = _attempt(errors, tracebacks, "iqms", lambda: image_iqms(
            image, brain, tissues=reference.tissues, threads=threads, seed=seed))
        if iqm_reference is not None:
            reference._tissues = iqm_reference.tissues
            reference.template = iqm_reference.masks.template
        reference.margin_mask  # noqa: B018 (computed once here, for every result)
    template = _template_record(iqm_reference)
    # the results see the errors of the references only (not of the input's own IQM record)
    measured = MeasuredOriginal(found, reference, iqm_reference, template, dict(errors),
                                threads, seed)
    if iqm_reference is not None:
        iqms = _attempt(errors, tracebacks, "iqms", record_iqms, image, brain, {},
                        reference=iqm_reference, threads=threads, seed=seed)
        if iqms is not None:
            found["iqms"] = iqms["original"]
            found["iqm_masks"] = iqms["original_masks"]
            found["iqm_settings"] = iqms["settings"]
            found["iqm_template"] = template
    if errors:
        found["measurement_errors"] = errors
        found["traceback"] = {k: tracebacks.get(k, "") for k in errors}
    found["timings_s"] = {**(reference.timings if reference is not None else {}),
                          "total_reference": time.perf_counter() - start}
    return measured


def measure_result(original: MeasuredOriginal, name: str, folder: Path, *,
                   seen: tuple[Path, str] | None = None) -> dict[str, Any]:
    """One defacer's entry: its defacing metrics and IQMs in both modes, against the original.

    A family that fails is recorded under ``measurement_errors`` with its reason, and the
    others are still computed. ``seen`` (folder, image key): keep the defaced head as measured
    there, for the report (:mod:`bidsapp.metrics.seen`).
    """
    from bidsapp.metrics.defacing import measure_defaced
    from bidsapp.metrics.iqms.defaced import record_iqms

    reference, iqm_reference, errors = original.reference, original.iqm_reference, original.errors
    timings: dict[str, float] = {}
    failed: dict[str, str] = {}
    tracebacks: dict[str, str] = {}
    entry: dict[str, Any] = {"timings_s": timings}
    if reference is None:
        failed["all"] = f"the original could not be measured ({errors['face']})"
    else:
        defaced = _attempt(failed, tracebacks, "read", _read_result, Path(folder))
        if defaced is not None:
            measured = _attempt(failed, tracebacks, "downstream", measure_defaced,
                                reference, defaced[0], defaced[1], timings=timings)
            if measured is None:  # the same without the downstream family
                measured = _attempt(failed, tracebacks, "face_brain", measure_defaced,
                                    reference, defaced[0], defaced[1], downstream=False,
                                    timings=timings)
            if measured is not None:
                entry["metrics"] = measured.record
                if seen is not None and measured.skin is not None:
                    _keep_seen(seen, name, measured.skin, reference.grid.affine)
            # deepbet and tissues of the defaced image, made once for both families
            anatomy = measured.anatomy if measured is not None else None
            reuse = anatomy is not None and anatomy.tissues is not None
            if iqm_reference is not None:
                iqm_start = time.perf_counter()
                iqms = _attempt(
                    failed, tracebacks, "iqms", record_iqms, reference.image,
                    reference.brain_mask, {name: defaced[0]}, reference=iqm_reference,
                    defaced_brain_masks={name: anatomy.brain_mask} if reuse else None,
                    defaced_tissues={name: anatomy.tissues} if reuse else None,
                    threads=original.threads, seed=original.seed)
                if iqms is not None:
                    entry["iqms"] = iqms["defacers"][name]
                    entry["iqm_template"] = original.template
                timings["iqms"] = time.perf_counter() - iqm_start
            elif "iqms" in errors:
                failed["iqms"] = f"the original's IQMs failed ({errors['iqms']})"
    if failed:
        entry["measurement_errors"] = failed
        entry["traceback"] = {k: tracebacks.get(k, "") for k in failed}
    return entry


def measure_image(image_path: Path, brain_mask_path: Path, results: dict[str, str], *,
                  threads: int = 1, seed: int = 42, seen: tuple[Path, str] | None = None
                  ) -> dict[str, Any]:
    """Metrics of each defacer's result (``results``: defacer -> its result folder): the
    original's stage once, then each result's (what the workflow runs as separate steps)."""
    original = measure_original(image_path, brain_mask_path, threads=threads, seed=seed)
    return {"input": original.input,
            "defacers": {name: measure_result(original, name, Path(folder), seen=seen)
                         for name, folder in sorted(results.items())}}


def _keep_seen(seen: tuple[Path, str], defacer: str, skin, affine) -> None:
    """Keep the head as measured for the report; without it the report builds its own."""
    from bidsapp.metrics.seen import save_seen, seen_path

    folder, key = seen
    try:
        save_seen(seen_path(Path(folder), key, defacer), skin.head, affine, skin.faces)
    except OSError as exc:
        print(f"the head of {defacer} was not kept for the report: {exc}", file=sys.stderr)


def _template_record(iqm_reference) -> dict | None:
    """Which template the IQMs' ``tpm_overlap_*`` and landmark planes came from (or None)."""
    if iqm_reference is None or iqm_reference.masks.template is None:
        return None
    from bidsapp.anatomy.templates import iqm_template

    return iqm_template().record()


def _no_orientation(image: nib.Nifti1Image) -> bool:
    header = image.header
    return "qform_code" in header and int(header["qform_code"]) == 0 \
        and int(header["sform_code"]) == 0


def _read_result(folder: Path) -> tuple[nib.Nifti1Image, np.ndarray]:
    defaced = nib.load(str(folder / "defaced.nii.gz"))
    altered = np.asanyarray(nib.load(str(folder / "altered.nii.gz")).dataobj) > 0
    return defaced, altered


def save_original(original: MeasuredOriginal, path: Path) -> Path:
    """Keep the original's stage for the results' steps (a pickle in the step's own folder,
    read back by :func:`load_original` with the same bidsapp; never an output)."""
    import pickle

    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as handle:
        pickle.dump(original, handle, protocol=pickle.HIGHEST_PROTOCOL)
    partial.replace(path)
    return path


def load_original(path: Path) -> MeasuredOriginal:
    import pickle

    with Path(path).open("rb") as handle:
        return pickle.load(handle)


def main(argv: list[str] | None = None) -> int:
    """``original SPEC``, ``results SPEC`` (the workflow's two steps) or ``SPEC`` (the whole
    image at once)."""
    argv = sys.argv[1:] if argv is None else argv
    stage, spec_path = (argv[0], argv[1]) if len(argv) > 1 else ("image", argv[0])
    spec = json.loads(Path(spec_path).read_text())
    threads, seed = spec.get("threads", 1), spec.get("seed", 42)
    seen = (Path(spec["seen_dir"]), spec["image_key"]) if spec.get("seen_dir") else None
    if stage == "original":
        original = measure_original(Path(spec["image"]), Path(spec["brain_mask"]),
                                    threads=threads, seed=seed)
        save_original(original, Path(spec["state"]))
        result = original.input
    elif stage == "results":
        original = load_original(Path(spec["state"]))
        result = {name: measure_result(original, name, Path(folder), seen=seen)
                  for name, folder in sorted(spec["results"].items())}
    else:
        result = measure_image(Path(spec["image"]), Path(spec["brain_mask"]), spec["results"],
                               threads=threads, seed=seed, seen=seen)
    atomic_write_json(Path(spec["out"]), result)
    return 0


if __name__ == "__main__":  # run as bidsapp.metrics.measure, so the pickle names its classes
    from bidsapp.metrics.measure import main as _main

    sys.exit(_main())
