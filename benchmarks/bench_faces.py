"""Cost and detection rate of the face part: dlib detection, landmarks, identification attack.

For every original anatomical image of ds-faces and ds-more: the deepbet brain mask (timed, not
part of the face cost), the original's reference with its renders and detection
(:meth:`bidsapp.metrics.reference.OriginalReference.build`, the ``detection`` timer), then for each defacer
(run in-process): the detection on the defaced renders inside
:func:`bidsapp.metrics.defacing.defacing_metrics` (no downstream), and the attack's own work
(:func:`bidsapp.identification.see_original` once per original, :func:`see_defaced` per output).
Prints seconds per image and output, the detector's rate on the originals whose lower face is
in the field of view (the issue-14 target is 90 %), and the face found on defaced outputs.

    python benchmarks/bench_faces.py [--testdata ../shared/testdata] [--defacers ...]

Run it on an idle machine: ``os.getloadavg()`` is printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib

from bidsapp import identification
from bidsapp.anatomy.brainmask import deepbet_brain_mask
from bidsapp.metrics.defacing import defacing_metrics, input_face_check
from bidsapp.metrics.reference import OriginalReference

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_metrics import deface  # noqa: E402 - the benchmarks share one in-process runner

DATASETS = ("ds-faces", "ds-more")


def _seconds(function, *args, **kwargs):
    start = time.perf_counter()
    out = function(*args, **kwargs)
    return out, time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--testdata", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared" / "testdata")
    parser.add_argument("--defacers", nargs="*", default=["quickshear", "facecut"])
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="bidsapp-bench-faces-"))
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'image':32s} {'output':12s} {'mask':>5s} {'detect':>6s} {'attack':>6s} | "
          "faces / views, regions from")
    expected, found, outputs_with_face, per_output = 0, 0, 0, []
    for dataset in DATASETS:
        for path in sorted((args.testdata / dataset).rglob("anat/*.nii.gz")):
            label = path.name.split(".nii")[0]
            image = nib.load(str(path))
            mask, mask_s = _seconds(deepbet_brain_mask, image)
            ref = OriginalReference.build(image, mask)
            timings = ref.timings
            check = input_face_check(ref)
            seen, attack_s = _seconds(identification.see_original, image, mask)
            views = ref.skin.faces.faces if ref.skin.faces is not None else {}
            with_face = sum(face is not None for face in views.values())
            in_fov = bool(check["input_face_in_fov"])
            expected += in_fov
            found += in_fov and bool(check["input_face_detected"])
            detect_s = timings.get("detection", 0.0)
            print(f"{label:32s} {'(original)':12s} {mask_s:5.1f} {detect_s:6.1f}"
                  f" {attack_s:6.1f} | {with_face}/{len(views)}, "
                  f"{check['input_face_regions_from']}, lower face in view: {in_fov}")
            for name in args.defacers:
                defaced = deface(name, image, path, mask, work / label / name)
                if defaced is None:
                    print(f"{'':32s} {name:12s} (not available or failed)")
                    continue
                spent: dict[str, float] = {}
                record = defacing_metrics(ref, defaced, downstream=False, timings=spent)
                (_, views_out), attack_out = _seconds(identification.see_defaced, seen, defaced)
                faces_out = sum(face is not None for face in views_out.faces.values())
                outputs_with_face += bool(record["face_detected"])
                per_output.append(spent.get("detection", 0.0) + attack_out)
                print(f"{'':32s} {name:12s} {'':5s} {spent.get('detection', 0):6.1f} "
                      f"{attack_out:6.1f} | {faces_out}/{len(views_out.faces)}, face detected: "
                      f"{record['face_detected']}")
    print(f"\noriginals with the lower face in view: the detector found a face on {found} of "
          f"{expected} ({100 * found / max(expected, 1):.0f} %)")
    print(f"defaced outputs with a face detected: {outputs_with_face} of {len(per_output)}")
    if per_output:
        mean = sum(per_output) / len(per_output)
        print(f"detection + attack per defaced output: mean {mean:.1f} s, max "
              f"{max(per_output):.1f} s (the original's own detection and attack come once per "
              "image on top)")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
