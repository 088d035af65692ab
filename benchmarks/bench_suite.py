"""The benchmark suite: wall time and peak RSS per stage and per defacer, peers, throughput.

    pip install -e ".[bench]"   # SimpleITK and termcolor, for the original deepdefacer code
    python benchmarks/bench_suite.py [--testdata ../shared/testdata] [--out DIR]
        [--defacers quickshear deepdefacer facemask facecut] [--images N] [--skip-throughput]

Images: pydeface's 1 mm template head and every anatomical image of ds-faces. Every stage runs
in a child process of its own, as in the pipeline, and is measured the same way (wall clock,
and peak RSS from ``wait4`` including whatever the child starts):

- ``brain mask``: deepbet, once per image (the pipeline computes it once and shares it);
- ``coregistration``: for a T2w/FLAIR, the rigid T1w-to-image registration that carries the
  T1w's masks (the pipeline's carried mode; the defacers below are run directly on every image
  so that they can be compared);
- each defacer;
- ``metrics``: the pipeline's Measure step for all defacers of the image (face check, defacing
  metrics, downstream, IQMs in both modes); its sub-stages are the step's own timers;
- peers, in the same run: ``deepdefacer (original code)``, the deepdefacer package's own
  SimpleITK pre-processing and resampling around the same model (stored voxel order, as its
  command does; Keras 3 on torch stands in for its TensorFlow, which cannot be installed, and
  SimpleITK 2's CompositeTransform for the 1.x transform it composes), and
  ``IQMs: MRIQC 24.0.2 functions`` next to ``IQMs: bidsapp`` on the same masks and tissues.

Then the throughput of whole participant runs (``--nprocs 1`` and ``2``) on four T1w images
(sub-xa30 run-1 and run-2, sub-ixi012, sub-ixi015) with quickshear and facecut and all metrics.
Everything is printed as one table.
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_TESTDATA = HERE.parents[1] / "shared" / "testdata"
THROUGHPUT_LABELS = ("xa30", "ixi012", "ixi015")  # four T1w images


def images(testdata: Path) -> list[tuple[str, Path]]:
    from bidsapp.anatomy.templates import pydeface_file

    found = [("template-1mm", pydeface_file("mean_reg2mean.nii.gz"))]
    for path in sorted((testdata / "ds-faces").rglob("anat/*.nii.gz")):
        found.append((path.name[: -len(".nii.gz")], path))
    return found


def measured(argv: list[str], work: Path, name: str, *, module: bool = True):
    """Run one child (``python -m MODULE ...`` or ``python SCRIPT ...``) and measure it."""
    from bidsapp.child import run_child

    work.mkdir(parents=True, exist_ok=True)
    return run_child(argv, log=work / f"{name}.log", cwd=work, threads=1, module=module)


# --- peers, run in their own child processes -----------------------------------------------------

def peer_deepdefacer_original(image_path: str, out_dir: str) -> None:
    """The deepdefacer package's own inference path around its model (see the module doc)."""
    import types

    import nibabel as nib
    import numpy as np

    # its module imports TensorFlow only to list GPUs; TensorFlow cannot be installed here
    from importlib.machinery import ModuleSpec

    for name in ("tensorflow", "tensorflow.python", "tensorflow.python.client",
                 "tensorflow.python.client.device_lib"):
        stub = types.ModuleType(name)
        stub.__spec__ = ModuleSpec(name, loader=None)
        sys.modules[name] = stub
    sys.modules["tensorflow.python.client.device_lib"].list_local_devices = lambda: []
    sys.modules["tensorflow.python.client"].device_lib = \
        sys.modules["tensorflow.python.client.device_lib"]
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras
    from deepdefacer import defacer_utils

    # SimpleITK 2 renamed the composable transform its resampling builds (1.x is not on PyPI
    # for this Python): the one API shim; everything else is the package's code as published
    defacer_utils.sitk.Transform = defacer_utils.sitk.CompositeTransform
    os.chdir(out_dir)  # its resampling writes an intermediate file into the working folder
    shape = np.squeeze(nib.load(image_path).get_fdata()).shape
    data, _ = defacer_utils.pre_process_image(image_path)
    model_path = Path(defacer_utils.__file__).with_name("model.hdf5")
    model = keras.models.load_model(model_path, compile=False,
                                    custom_objects={"dice_coefficient":
                                                    defacer_utils.dice_coefficient})
    keep = np.squeeze(model.predict(data, verbose=0)) >= 0.5
    keep = defacer_utils.resample_image(keep.astype(np.float32), specified_shape=shape,
                                        mask=True)
    np.save(Path(out_dir) / "removed_voxels.npy", np.array(int((np.asarray(keep) < 0.5).sum())))


def peer_iqms_prepare(image_path: str, brain_path: str, out_file: str) -> None:
    """What both IQM implementations share: N4, tissues, masks (computed once, pickled)."""
    import nibabel as nib
    import numpy as np

    from bidsapp.anatomy.masks import compute_masks
    from bidsapp.anatomy.segmentation import image_data, segment_tissues
    from bidsapp.metrics.iqms.stats import harmonize

    image = nib.as_closest_canonical(nib.load(image_path))
    brain = np.asanyarray(nib.as_closest_canonical(nib.load(brain_path)).dataobj) > 0
    tissues = segment_tissues(image, brain, threads=1)
    raw = image_data(image)
    masks = compute_masks(image, brain, tissues, data=raw)
    inudata = harmonize(tissues.corrected, tissues.probs["wm"]).astype(np.float64)
    with open(out_file, "wb") as handle:
        pickle.dump({"raw": raw, "zooms": image.header.get_zooms()[:3], "masks": masks,
                     "tissues": tissues, "affine": image.affine, "inudata": inudata}, handle)


def peer_iqms(side: str, prepared: str) -> None:
    with open(prepared, "rb") as handle:
        prep = pickle.load(handle)
    if side == "bidsapp":
        from bidsapp.metrics.iqms.image import iqms_from_arrays

        iqms_from_arrays(prep["raw"], prep["zooms"], prep["masks"], prep["tissues"],
                         affine=prep["affine"])
        return
    sys.path.insert(0, str(HERE))
    import mriqc
    from bench_iqms import load_mriqc, mriqc_function, mriqc_iqms

    anat = load_mriqc()
    fuzzy_jaccard = mriqc_function(
        str(Path(mriqc.__file__).parent / "interfaces" / "anatomical.py"), "fuzzy_jaccard")
    mriqc_iqms(anat, fuzzy_jaccard, prep["raw"].astype("float64"), prep["inudata"],
               prep["masks"], prep["tissues"], prep["affine"])


PEERS = {"deepdefacer-original": peer_deepdefacer_original, "iqms-prepare": peer_iqms_prepare,
         "iqms": peer_iqms}


# --- the suite ----------------------------------------------------------------------------------

class Table:
    def __init__(self):
        self.rows: list[tuple] = []

    def add(self, image: str, shape: str, stage: str, wall: float | None, rss: float | None,
            status: str) -> None:
        self.rows.append((image, shape, stage, wall, rss, status))
        wall_text = "" if wall is None else f"{wall:8.1f} s"
        rss_text = "" if rss is None else f"{rss:7.0f} MB"
        print(f"{image:<28} {stage:<44} {wall_text:>10} {rss_text:>10} {status}",
              file=sys.stderr, flush=True)

    def add_usage(self, image, shape, stage, usage) -> None:
        self.add(image, shape, stage, usage.wall_time_s, usage.peak_rss_mb,
                 "ok" if usage.returncode == 0 else f"failed (exit {usage.returncode})")

    def print(self) -> None:
        print("\n| image | shape | stage | wall time (s) | peak RSS (MB) | status |")
        print("|---|---|---|---:|---:|---|")
        for image, shape, stage, wall, rss, status in self.rows:
            wall_text = "" if wall is None else f"{wall:.1f}"
            rss_text = "" if rss is None else f"{rss:.0f}"
            print(f"| {image} | {shape} | {stage} | {wall_text} | {rss_text} | {status} |")


def bench_image(table: Table, label: str, path: Path, defacers: list[str], work: Path,
                t1w_of: dict[str, Path]) -> None:
    import json

    import nibabel as nib

    from bidsapp.defacers import get_defacer
    from bidsapp.defacers.runner import make_spec, run_measured

    shape = "x".join(map(str, nib.load(path).shape[:3]))
    work.mkdir(parents=True, exist_ok=True)
    mask = work / "brain_mask.nii.gz"
    usage = measured(["bidsapp.anatomy", "brainmask", str(path), str(mask), "1"], work,
                     "brainmask")
    table.add_usage(label, shape, "brain mask (deepbet)", usage)
    if usage.returncode != 0:
        return
    suffix = label.rsplit("_", 1)[-1]
    if suffix in ("T2w", "FLAIR") and label.split("_")[0] in t1w_of:
        t1w = t1w_of[label.split("_")[0]]
        t1w_mask = work / "t1w_brain_mask.nii.gz"
        measured(["bidsapp.anatomy", "brainmask", str(t1w), str(t1w_mask), "1"], work,
                 "t1w_brainmask")
        coreg = work / "coregistration"
        coreg.mkdir(exist_ok=True)
        usage = measured(["bidsapp.anatomy", "coregister", str(path), str(t1w), str(t1w_mask),
                          str(coreg), "42", "1"], work, "coregister")
        table.add_usage(label, shape, "coregistration (T1w mask carried)", usage)
    results = {}
    for name in defacers:
        spec = make_spec(defacer=name, image=path, out_dir=work / name, brain_mask=mask,
                         guard=get_defacer(name).guard_by_default, guard_margin_mm=5.0,
                         seed=42, threads=1)
        record = run_measured(spec)
        table.add(label, shape, f"defacer: {name}", record["wall_time_s"],
                  record["peak_rss_mb"], record["status"])
        if record["status"] == "ok":
            results[name] = str(work / name)
    spec_file = work / "measure_spec.json"
    spec_file.write_text(json.dumps({"image": str(path), "brain_mask": str(mask),
                                     "results": results, "threads": 1, "seed": 42,
                                     "out": str(work / "metrics.json")}))
    usage = measured(["bidsapp.metrics.measure", str(spec_file)], work, "measure")
    table.add_usage(label, shape, f"metrics ({len(results)} defacers, all families)", usage)
    if usage.returncode == 0:
        metrics = json.loads((work / "metrics.json").read_text())
        for name, entry in sorted(metrics["defacers"].items()):
            timers = entry.get("timings_s") or {}
            split = ", ".join(f"{key} {seconds:.1f}" for key, seconds in sorted(timers.items()))
            table.add(label, shape, f"  of which {name}", sum(timers.values()), None,
                      f"{'ok' if 'error' not in entry else 'failed'} ({split} s)")
    script = str(Path(__file__).resolve())
    peer_dir = work / "deepdefacer_original"
    peer_dir.mkdir(exist_ok=True)
    usage = measured([script, "--peer", "deepdefacer-original", str(path), str(peer_dir)],
                     work, "peer_deepdefacer", module=False)
    table.add_usage(label, shape, "peer: deepdefacer (original code)", usage)
    prepared = work / "iqm_inputs.pkl"
    usage = measured([script, "--peer", "iqms-prepare", str(path), str(mask), str(prepared)],
                     work, "peer_iqms_prepare", module=False)
    table.add_usage(label, shape, "IQM inputs (N4, tissues, masks), shared", usage)
    if usage.returncode == 0:
        for side, title in (("bidsapp", "IQMs: bidsapp"),
                            ("mriqc", "peer: IQMs, MRIQC 24.0.2 functions")):
            usage = measured([script, "--peer", "iqms", side, str(prepared)], work,
                             f"iqms_{side}", module=False)
            table.add_usage(label, shape, title, usage)
        prepared.unlink(missing_ok=True)


def throughput(table: Table, testdata: Path, out: Path) -> None:
    from bidsapp.child import run_child

    for nprocs in (1, 2):
        folder = out / f"throughput_nprocs{nprocs}"
        shutil.rmtree(folder, ignore_errors=True)
        command = ["bidsapp", str(testdata / "ds-faces"), str(folder / "out"), "participant",
                   "-w", str(folder / "work"), "--participant-label", *THROUGHPUT_LABELS,
                   "--defacers", "quickshear", "facecut", "--nprocs", str(nprocs)]
        folder.mkdir(parents=True)
        usage = run_child(command, log=folder / "run.log", cwd=folder, threads=1)
        status = "ok" if usage.returncode == 0 else f"failed (exit {usage.returncode})"
        per_hour = 4 * 3600 / usage.wall_time_s
        table.add("4 T1w images", "", f"whole participant run, --nprocs {nprocs} "
                  f"({per_hour:.0f} images/hour)", usage.wall_time_s, usage.peak_rss_mb, status)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--peer"]:
        name, *arguments = argv[1:]
        PEERS[name](*arguments)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--testdata", type=Path, default=DEFAULT_TESTDATA)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--defacers", nargs="+",
                        default=["quickshear", "deepdefacer", "facemask", "facecut"])
    parser.add_argument("--images", type=int, default=None, help="only the first N images")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="bidsapp-bench-suite-"))
    table = Table()
    start, load = time.time(), os.getloadavg()[0]
    found = images(args.testdata)[: args.images]
    t1w_of = {label.split("_")[0]: path for label, path in found if label.endswith("_T1w")
              and "run-2" not in label}
    for label, path in found:
        bench_image(table, label, path, args.defacers, out / label, t1w_of)
    if not args.skip_throughput:
        throughput(table, args.testdata, out)
    print(f"\nbidsapp benchmark suite: {len(found)} image(s), {time.time() - start:.0f} s; "
          f"load average {load:.2f} at start, {os.getloadavg()[0]:.2f} at the end, "
          f"{os.cpu_count()} CPUs; one thread per child; outputs in {out}")
    table.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
