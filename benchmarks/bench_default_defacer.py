"""Wall time, CPU time and peak memory of bidsapp's native defacers, one child process per run.

Usage::

    python benchmarks/bench_default_defacer.py [--defacers facecut facemask quickshear]
        [--images PATH ...] [--threads 1 2] [--repeat 2] [--testdata DIR]

Default images: pydeface's 1 mm template and every ds-faces image. The deepbet brain mask of each
image is computed once beforehand (not timed) and handed to the defacers that need it, as the
runner does. Each (defacer, image, threads, repeat) runs in a fresh child process; its wall time
and peak RSS (``os.wait4``) cover the import of the defacer, loading the image and defacing.
The last column is the MD5 of the defaced voxels: equal hashes across repeats and thread counts
show that the output is bit for bit reproducible.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: name -> "module:Class" (facecut and facemask are not necessarily in the registry yet).
DEFACERS = {
    "facecut": "bidsapp.defacers.facecut:FaceCut",
    "facemask": "bidsapp.defacers.facemask:FaceMask",
    "quickshear": "bidsapp.defacers.quickshear:QuickShear",
    "deepdefacer": "bidsapp.defacers.deepdefacer:DeepDefacer",
}


def _worker(spec_path: str) -> int:
    """Child: deface one image and write the MD5 of the result."""
    spec = json.loads(Path(spec_path).read_text())
    from importlib import import_module

    import nibabel as nib
    import numpy as np

    from bidsapp.defacers.base import DefaceRequest

    module, _, cls = spec["target"].partition(":")
    defacer = getattr(import_module(module), cls)()
    image = nib.load(spec["image"])
    brain = None
    if defacer.needs_brain_mask:
        brain = np.asanyarray(nib.load(spec["mask"]).dataobj) > 0
    work = Path(spec["work_dir"])
    work.mkdir(parents=True, exist_ok=True)
    request = DefaceRequest(
        image=image,
        image_path=Path(spec["image"]),
        work_dir=work,
        brain_mask=brain,
        threads=spec["threads"],
        options=spec.get("options", {}),
    )
    out = defacer.deface(request)
    data = np.ascontiguousarray(out.data)
    result = {
        "md5": hashlib.md5(data.tobytes()).hexdigest(),
        "dtype": str(data.dtype),
        "parameters": {k: v for k, v in out.parameters.items() if not isinstance(v, dict)},
    }
    Path(spec["result"]).write_text(json.dumps(result, default=str))
    return 0


def _child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[key] = str(threads)
    env["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_child(args: list[str], threads: int) -> tuple[int, float, float, float]:
    """Run ``python args`` measured: (returncode, wall s, cpu s, peak RSS MB)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *args], env=_child_env(threads), cwd=REPO)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return proc.returncode, wall, cpu, usage.ru_maxrss / 1024.0


def brain_masks(images: list[Path], folder: Path) -> dict[Path, Path]:
    """deepbet masks of the images, computed in one child process (not timed)."""
    code = (
        "import sys, nibabel as nib, numpy as np\n"
        "from bidsapp.anatomy.brainmask import deepbet_brain_mask\n"
        "for src, dst in zip(sys.argv[1::2], sys.argv[2::2]):\n"
        "    img = nib.load(src)\n"
        "    m = deepbet_brain_mask(img, threads=1).astype(np.uint8)\n"
        "    nib.save(nib.Nifti1Image(m, img.affine), dst)\n"
    )
    masks = {img: folder / f"mask{n}_{img.name}" for n, img in enumerate(images)}
    todo = [str(p) for img, mask in masks.items() if not mask.exists() for p in (img, mask)]
    if todo:
        subprocess.run([sys.executable, "-c", code, *todo], check=True, env=_child_env(1))
    return masks


def default_images(testdata: Path | None) -> list[Path]:
    sys.path.insert(0, str(REPO))
    from bidsapp.anatomy.templates import pydeface_file

    images = [pydeface_file("mean_reg2mean.nii.gz")]
    if testdata is None:
        for candidate in (os.environ.get("BIDSAPP_TESTDATA"), REPO.parent / "shared" / "testdata"):
            if candidate and (Path(candidate) / "ds-faces").is_dir():
                testdata = Path(candidate)
                break
    if testdata is not None:
        images += sorted((testdata / "ds-faces").glob("sub-*/anat/*.nii.gz"))
    return images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--defacers", nargs="+", default=["facecut", "facemask", "quickshear"])
    parser.add_argument("--images", nargs="+", type=Path)
    parser.add_argument("--testdata", type=Path)
    parser.add_argument("--threads", nargs="+", type=int, default=[2])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--options", default="{}", help="JSON options for the defacers")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args.worker)

    images = args.images or default_images(args.testdata)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_deface") as tmp:
        tmp = Path(tmp)
        masks = brain_masks(images, tmp)
        header = f"{'defacer':12s} {'image':34s} {'thr':>3s} {'run':>3s} {'wall s':>7s} "
        header += f"{'cpu s':>7s} {'RSS MB':>7s}  md5"
        print(header, flush=True)
        for name in args.defacers:
            for image in images:
                for threads in args.threads:
                    for run in range(args.repeat):
                        spec = {
                            "target": DEFACERS.get(name, name),
                            "image": str(image),
                            "mask": str(masks[image]),
                            "threads": threads,
                            "options": json.loads(args.options),
                            "work_dir": str(tmp / f"work_{name}"),
                            "result": str(tmp / "result.json"),
                        }
                        spec_path = tmp / "spec.json"
                        spec_path.write_text(json.dumps(spec))
                        (tmp / "result.json").unlink(missing_ok=True)
                        script = [str(Path(__file__).resolve()), "--worker", str(spec_path)]
                        code, wall, cpu, rss = run_child(script, threads)
                        result = {}
                        if code == 0 and (tmp / "result.json").exists():
                            result = json.loads((tmp / "result.json").read_text())
                        md5 = result.get("md5", f"FAILED ({code})")
                        row = {"defacer": name, "image": image.name, "threads": threads, "run": run,
                                   "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                                   "peak_rss_mb": round(rss, 1), "md5": md5,
                                   "parameters": result.get("parameters", {})}  # fmt: skip
                        rows.append(row)
                        print(
                            f"{name:12s} {image.name[:34]:34s} {threads:3d} {run:3d} "
                            f"{wall:7.2f} {cpu:7.2f} {rss:7.1f}  {md5[:12]}",
                            flush=True,
                        )
    by_key: dict[tuple[str, str], set[str]] = {}
    for row in rows:
        by_key.setdefault((row["defacer"], row["image"]), set()).add(row["md5"])
    unstable = [key for key, hashes in by_key.items() if len(hashes) > 1]
    if args.repeat > 1 or len(args.threads) > 1:
        print("reproducible:", "all" if not unstable else f"NOT for {unstable}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
