"""Measure every defacer's result for one image, reusing what depends on the original.

``python -m bidsapp.metrics.measure SPEC.json`` (run by the workflow in a child process) writes
one JSON: the input's face check and IQMs, and for each defacer that succeeded its defacing
metrics (:func:`bidsapp.metrics.defacing.measure_defaced`) and IQMs in both modes
(:func:`bidsapp.metrics.iqms.defaced.record_iqms`), with the seconds each metric group took. The
original's brain mask, skin surface, renders and tissue segmentation are computed once here and
shared by every defacer and by both metric families.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
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


def measure_image(image_path: Path, brain_mask_path: Path, results: dict[str, str], *,
                  threads: int = 1, seed: int = 42) -> dict[str, Any]:
    """Metrics of each defacer's result (``results``: defacer -> its result folder).

    A family of metrics that fails (face, downstream, IQMs) is recorded under
    ``measurement_errors`` with its reason, and the others are still computed.
    """
    from bidsapp.metrics.defacing import input_face_check, measure_defaced
    from bidsapp.metrics.iqms.defaced import record_iqms
    from bidsapp.metrics.iqms.image import image_iqms
    from bidsapp.metrics.reference import OriginalReference
    from bidsapp.metrics.orientation import orientation_check

    image = load_once(image_path)  # read by each family and for each defacer
    brain = np.asanyarray(nib.load(str(brain_mask_path)).dataobj) > 0
    start = time.perf_counter()
    errors: dict[str, str] = {}
    tracebacks: dict[str, str] = {}
    reference = _attempt(errors, tracebacks, "face", OriginalReference.build, image, brain,
                         threads=threads, seed=seed)
    out: dict[str, Any] = {"input": {}, "defacers": {}}
    if reference is not None:
        out["input"] = input_face_check(reference)
        if _no_orientation(image):
            out["input"]["orientation_check"] = orientation_check(
                reference.skin.head, reference.brain_world, reference.grid.spacing)
        # the IQMs register the template once; its tissue maps name the classes (T2w, FLAIR)
        # for the downstream volumes too
        iqm_reference = _attempt(errors, tracebacks, "iqms", lambda: image_iqms(
            image, brain, tissues=reference.tissues, threads=threads, seed=seed))
        if iqm_reference is not None:
            reference._tissues = iqm_reference.tissues
            reference.template = iqm_reference.masks.template
    else:
        iqm_reference = None
    template = _template_record(iqm_reference)
    per_defacer = {}
    for name, folder in sorted(results.items()):
        timings: dict[str, float] = {}
        failed: dict[str, str] = {}
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
                # deepbet and tissues of the defaced image, made once for both families
                anatomy = measured.anatomy if measured is not None else None
                reuse = anatomy is not None and anatomy.tissues is not None
                if iqm_reference is not None:
                    iqm_start = time.perf_counter()
                    iqms = _attempt(
                        failed, tracebacks, "iqms", record_iqms, image, brain,
                        {name: defaced[0]}, reference=iqm_reference,
                        defaced_brain_masks={name: anatomy.brain_mask} if reuse else None,
                        defaced_tissues={name: anatomy.tissues} if reuse else None,
                        threads=threads, seed=seed)
                    if iqms is not None:
                        entry["iqms"] = iqms["defacers"][name]
                        entry["iqm_template"] = template
                    timings["iqms"] = time.perf_counter() - iqm_start
                elif "iqms" in errors:
                    failed["iqms"] = f"the original's IQMs failed ({errors['iqms']})"
        if failed:
            entry["measurement_errors"] = failed
            entry["traceback"] = {k: tracebacks.get(k, "") for k in failed}
        per_defacer[name] = entry
    if iqm_reference is not None:
        iqms = _attempt(errors, tracebacks, "iqms", record_iqms, image, brain, {},
                        reference=iqm_reference, threads=threads, seed=seed)
        if iqms is not None:
            out["input"]["iqms"] = iqms["original"]
            out["input"]["iqm_masks"] = iqms["original_masks"]
            out["input"]["iqm_settings"] = iqms["settings"]
            out["input"]["iqm_template"] = template
    if errors:
        out["input"]["measurement_errors"] = errors
        out["input"]["traceback"] = {k: tracebacks.get(k, "") for k in errors}
    out["input"]["timings_s"] = {**(reference.timings if reference is not None else {}),
                                 "total_reference": time.perf_counter() - start}
    out["defacers"] = per_defacer
    return out


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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text())
    result = measure_image(Path(spec["image"]), Path(spec["brain_mask"]), spec["results"],
                           threads=spec.get("threads", 1), seed=spec.get("seed", 42))
    atomic_write_json(Path(spec["out"]), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
