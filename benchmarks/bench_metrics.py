"""Time each defacing metric adds per image, and the face detector's calibration counts.

For every image of ds-faces and ds-defaced: the original's reference (deepbet brain mask, skin,
face regions, renders, segmentation) once, then every native defacer's output (run in-process,
not timed here: see bench_defacers.py) measured with :func:`bidsapp.metrics.defacing.defacing_metrics`.
Prints the seconds per metric group and image, the headline results, and the detection counts
(TP/FP/FN/TN) on originals (face expected on ds-faces images whose field of view holds the whole
face, none on ds-defaced) and on defaced outputs (no face expected).

    python benchmarks/bench_metrics.py [--testdata ../shared/testdata] [--defacers ...]
        [--no-downstream] [--json out.json] [--figure docs/_static/metrics_face_regions.png]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from bidsapp.anatomy.brainmask import deepbet_brain_mask
from bidsapp.defacers import get_defacer
from bidsapp.defacers.base import DefaceRequest
from bidsapp.metrics.defacing import defacing_metrics, input_face_check
from bidsapp.metrics.reference import OriginalReference, defaced_skin

DEFACERS = ("quickshear", "deepdefacer", "facemask")
GROUPS = ("brain", "face", "detection", "downstream")


def images(testdata: Path) -> list[tuple[str, str, Path]]:
    found = []
    for dataset in ("ds-faces", "ds-defaced"):
        for path in sorted((testdata / dataset).rglob("anat/*.nii.gz")):
            found.append((dataset, path.name.replace(".nii.gz", ""), path))
    return found


def deface(name: str, image: nib.Nifti1Image, path: Path, mask: np.ndarray,
           work: Path) -> nib.Nifti1Image | None:
    """One defacer's output as the runner would write it (input dtype), or None."""
    from bidsapp.io import save_like

    defacer = get_defacer(name)
    if not defacer.availability().available:
        return None
    work.mkdir(parents=True, exist_ok=True)
    try:
        output = defacer.deface(DefaceRequest(image=image, image_path=path, work_dir=work,
                                              brain_mask=mask))
    except Exception as exc:  # noqa: BLE001 - a defacer failing is a result, not an error
        print(f"    {name} failed: {exc}", file=sys.stderr)
        return None
    return save_like(image, output.data, work / "defaced.nii.gz")


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "nan" if not np.isfinite(value) else f"{value:.1f}"
    return str(value)


def counts(pairs: list[tuple[bool, bool]]) -> str:
    """TP/FP/FN/TN of (expected, found) pairs."""
    tp = sum(e and f for e, f in pairs)
    fp = sum(f and not e for e, f in pairs)
    fn = sum(e and not f for e, f in pairs)
    tn = sum(not e and not f for e, f in pairs)
    return f"TP {tp}  FP {fp}  FN {fn}  TN {tn}"


def figure(path: Path, work: Path) -> None:
    """Face regions, altered skin and renders on the pydeface template (not a participant)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LightSource

    from bidsapp.anatomy.templates import pydeface_file
    from bidsapp.metrics import face as F

    template_path = pydeface_file("mean_reg2mean.nii.gz")
    template = nib.load(template_path)
    mask = deepbet_brain_mask(template)
    ref = OriginalReference.build(template, mask)
    geo, grid = ref.geometry, ref.grid
    shade = LightSource(azdeg=315, altdeg=45)

    def shaded(depth):
        filled = np.where(np.isfinite(depth), depth, np.nanmin(depth) - 5)
        out = shade.shade(filled.T, cmap=plt.cm.gray, vert_exag=1, blend_mode="soft")
        out[~np.isfinite(depth).T] = (1, 1, 1, 1)
        return out

    def extent(axis_a, axis_b):
        a, b = grid.coords(axis_a), grid.coords(axis_b)
        return (a[0], a[-1], b[0], b[-1])

    fig, axes = plt.subplots(2, 4, figsize=(16, 8.4))
    ax = axes[0, 0]
    ax.imshow(shaded(ref.skin.maps.anterior), origin="lower", extent=extent(0, 2))
    colours = {"face": "tab:green", "eyes": "gold", "nose": "tab:red", "mouth": "tab:purple",
               "chin": "tab:blue"}
    xs, zs = grid.coords(0), grid.coords(2)
    for name, colour in colours.items():
        ax.contour(xs, zs, geo.front[name].T.astype(float), [0.5], colors=colour,
                   linewidths=1.5)
        ax.plot([], [], color=colour, label=name)
    ax.plot(geo.nose_tip[0], geo.nose_tip[2], "r+", ms=12, mew=2, label="nose tip")
    ax.invert_xaxis()
    ax.legend(loc="lower left", fontsize=7)
    ax.set_title("a) skin seen from the front: face regions")
    ax = axes[0, 1]
    ax.imshow(shaded(ref.skin.maps.right), origin="lower", extent=extent(1, 2))
    ax.contour(grid.coords(1), zs, geo.ears[1].T.astype(float), [0.5], colors="gold",
               linewidths=1.5)
    ax.set_title("b) skin seen from the right: ear (pinna)")
    for col, name in ((2, "quickshear"), (3, "deepdefacer")):
        ax = axes[0, col]
        defaced = deface(name, template, Path(template_path), mask, work / f"template-{name}")
        if defaced is None:
            ax.set_title(f"{name} not available")
            continue
        skin, _, _ = defaced_skin(ref, defaced)
        record = defacing_metrics(ref, defaced, downstream=False)
        altered = F.altered_skin(ref.skin.maps.anterior, skin.maps.anterior)
        ax.imshow(shaded(skin.maps.anterior), origin="lower", extent=extent(0, 2))
        overlay = np.ma.masked_where(~(altered & geo.front["face"]).T, np.ones(altered.T.shape))
        ax.imshow(overlay, origin="lower", extent=extent(0, 2), cmap="autumn", alpha=0.45)
        ax.contour(xs, zs, geo.front["face"].T.astype(float), [0.5], colors="tab:green")
        ax.plot(geo.nose_tip[0], geo.nose_tip[2], "c+", ms=12, mew=2)
        ax.invert_xaxis()
        ax.set_title(f"{'cd'[col - 2]}) {name}: face altered {record['face_altered_pct']:.0f}%,"
                     f" nose tip {'removed' if record['nose_tip_removed'] else 'left'}",
                     fontsize=10)
        view = axes[1, col]
        _render_panel(view, skin.faces)
        view.set_title(f"{'gh'[col - 2]}) {name}, best view: "
                       f"{'face' if record['face_detected'] else 'no face'}")
    for col in (0, 1):
        axes[1, col].set_axis_off()
    _render_panel(axes[1, 0], ref.skin.faces)
    axes[1, 0].set_title(f"e) template, best view: score {_fmt(record_score(ref.skin.faces))}")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    print(f"figure written to {path}")


def record_score(faces):
    """The best dlib score over a head's views (None without a face)."""
    found = [f.score for f in (faces.faces.values() if faces else ()) if f is not None]
    return max(found) if found else None


def _render_panel(ax, faces) -> None:
    """The render of the best-scoring view (the frontal one without a face), with dlib's box."""
    import matplotlib.pyplot as plt

    if faces is None:
        return
    best = max((f for f in faces.faces.values() if f is not None), key=lambda f: f.score,
               default=None)
    view = best.view if best is not None else next(iter(faces.renders))
    ax.imshow(faces.renders[view].image, cmap="gray", vmin=0, vmax=255)
    if best is not None:
        left, top, right, bottom = best.box
        ax.add_patch(plt.Rectangle((left, top), right - left, bottom - top, fill=False,
                                   ec="lime", lw=2))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--testdata", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared" / "testdata")
    parser.add_argument("--defacers", nargs="*", default=list(DEFACERS))
    parser.add_argument("--no-downstream", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--figure", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="bidsapp-bench-metrics-"))
    if args.figure:
        figure(args.figure, work)
    results, calibration_orig, calibration_defaced = [], [], []
    print("seconds per metric group and image (reference: once per image; then per output)")
    header = (f"{'image':28s} {'output':12s} {'mask':>5s} {'brain':>5s} {'face':>5s} "
              f"{'det':>5s} {'dstrm':>5s} | {'face%':>5s} {'eyes%':>5s} {'nose%':>5s} "
              f"{'tip':>4s} {'ears%':>5s} {'score':>6s} {'det':>4s} {'brain':>6s} {'dice':>6s}")
    print(header)
    for dataset, label, path in images(args.testdata):
        image = nib.load(path)
        start = time.perf_counter()
        mask = deepbet_brain_mask(image)
        mask_s = time.perf_counter() - start
        ref = OriginalReference.build(image, mask)
        if not args.no_downstream:
            ref.volumes  # noqa: B018 - the original's segmentation, timed in ref.timings
        check = input_face_check(ref)
        t = ref.timings
        print(f"{label:28s} {'(original)':12s} {mask_s:5.1f} {t.get('brain', 0):5.1f} "
              f"{t.get('face', 0):5.1f} {t.get('detection', 0):5.1f} "
              f"{t.get('segmentation', 0):5.1f}"
              f" | input face {'found' if check['input_face_detected'] else 'not found'}, "
              f"score {_fmt(check['input_face_score'])}, flagged "
              f"{_fmt(check['input_already_defaced'])} ({check['input_face_check']})")
        expected = dataset == "ds-faces" and ref.lower_face_in_fov
        if dataset == "ds-defaced" or ref.lower_face_in_fov:
            calibration_orig.append((expected, bool(check["input_face_detected"])))
        results.append({"image": label, "dataset": dataset, "output": "original",
                        "timings": {"brain_mask": mask_s, **t}, **check})
        outputs = [("self", image)]
        for name in args.defacers:
            defaced = deface(name, image, path, mask, work / label / name)
            if defaced is not None:
                outputs.append((name, defaced))
        for name, defaced in outputs:
            timings: dict[str, float] = {}
            record = defacing_metrics(ref, defaced, downstream=not args.no_downstream,
                                      timings=timings)
            print(f"{'':28s} {name:12s} {'':5s} {timings.get('brain', 0):5.1f} "
                  f"{timings.get('face', 0):5.1f} {timings.get('detection', 0):5.1f} "
                  f"{timings.get('downstream', 0):5.1f} | "
                  f"{_fmt(record['face_altered_pct']):>5s} {_fmt(record['eyes_altered_pct']):>5s}"
                  f" {_fmt(record['nose_altered_pct']):>5s} "
                  f"{'gone' if record['nose_tip_removed'] else 'left':>4s} "
                  f"{_fmt(record['ears_altered_pct']):>5s} "
                  f"{_fmt(record['face_score']):>6s} {_fmt(record['face_detected']):>4s} "
                  f"{record['brain_changed_voxels']:6d} {_fmt(record['bet_dice']):>6s}")
            if name != "self":
                calibration_defaced.append((False, bool(record["face_detected"])))
            results.append({"image": label, "dataset": dataset, "output": name,
                            "timings": timings, **record})
    print("\nface detection (dlib CNN over the view grid; a painted refacer face is rejected)")
    print(f"  originals (face expected on ds-faces with the whole face in the field of view,"
          f" none on ds-defaced): {counts(calibration_orig)}")
    print(f"  defaced outputs (no face expected): {counts(calibration_defaced)}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=_json_default))
    return 0


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value))


if __name__ == "__main__":
    sys.exit(main())
