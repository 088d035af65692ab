"""Measure every defacer's result for one image, reusing what depends on the original.

``python -m bidsapp.metrics.measure SPEC.json`` (run by the workflow in a child process) writes
one JSON: the input's face check and IQMs, and for each defacer that succeeded its defacing
metrics (:func:`bidsapp.metrics.defacing_metrics`) and IQMs in both modes
(:func:`bidsapp.metrics.iqms.defacing_iqms`), with the seconds each metric group took. The
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

from bidsapp.io import atomic_write_json


def measure_image(image_path: Path, brain_mask_path: Path, results: dict[str, str], *,
                  threads: int = 1, seed: int = 42) -> dict[str, Any]:
    """Metrics of each defacer's result (``results``: defacer -> its result folder)."""
    from bidsapp.metrics import OriginalReference, defacing_metrics, input_face_check
    from bidsapp.metrics.iqms import defacing_iqms

    image = nib.load(str(image_path))
    brain = np.asanyarray(nib.load(str(brain_mask_path)).dataobj) > 0
    start = time.perf_counter()
    reference = OriginalReference.build(image, brain, threads=threads, seed=seed)
    out: dict[str, Any] = {"input": input_face_check(reference), "defacers": {}}
    defaced_images, per_defacer, brains, tissues = {}, {}, {}, {}
    for name, folder in sorted(results.items()):
        timings: dict[str, float] = {}
        computed: dict[str, Any] = {}  # deepbet and tissues of the defaced image, made once
        try:
            defaced = nib.load(str(Path(folder) / "defaced.nii.gz"))
            altered = np.asanyarray(nib.load(str(Path(folder) / "altered.nii.gz")).dataobj) > 0
            metrics = defacing_metrics(reference, defaced, altered, timings=timings,
                                       computed=computed)
            defaced_images[name] = defaced
            if computed.get("tissues") is not None:
                brains[name], tissues[name] = computed["brain_mask"], computed["tissues"]
            per_defacer[name] = {"metrics": metrics, "timings_s": timings}
        except Exception as exc:  # one defacer's measurement must not hide the others
            per_defacer[name] = {"error": f"{type(exc).__name__}: {exc}",
                                 "traceback": traceback.format_exc()}
    iqm_start = time.perf_counter()
    iqms = defacing_iqms(image, brain, defaced_images, tissues=reference.tissues,
                         defaced_brain_masks=brains, defaced_tissues=tissues,
                         threads=threads, seed=seed)
    iqm_seconds = time.perf_counter() - iqm_start
    for name, entry in per_defacer.items():
        if name in iqms["defacers"]:
            entry["iqms"] = iqms["defacers"][name]
            entry["timings_s"]["iqms"] = iqm_seconds / max(1, len(defaced_images))
    out["input"]["iqms"] = iqms["original"]
    out["input"]["iqm_masks"] = iqms["original_masks"]
    out["input"]["iqm_settings"] = iqms["settings"]
    out["input"]["timings_s"] = {**reference.timings,
                                 "total_reference": time.perf_counter() - start}
    out["defacers"] = per_defacer
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text())
    result = measure_image(Path(spec["image"]), Path(spec["brain_mask"]), spec["results"],
                           threads=spec.get("threads", 1), seed=spec.get("seed", 42))
    atomic_write_json(Path(spec["out"]), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
