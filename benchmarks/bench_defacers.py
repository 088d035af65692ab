"""Wall time and peak RSS of every native defacer on every image of ds-faces and the 1 mm head.

Each defacer runs in its own child process exactly as in the pipeline (``run_measured``), so
the figures include Python start-up and imports, as a user's run does. The brain mask (deepbet)
is measured once per image, as the pipeline computes it once and shares it.

    python benchmarks/bench_defacers.py [--testdata ../shared/testdata] [--defacers ...]
        [--images PATH ...] [--threads 1] [--out /tmp/bench]

``--images`` measures the given images instead (for instance ds-more's adult 1 mm head,
``ds-more/sub-prisma/anat/sub-prisma_T1w.nii.gz``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import nibabel as nib

from bidsapp.anatomy.templates import pydeface_file
from bidsapp.child import run_child
from bidsapp.defacers import available_defacers, get_defacer
from bidsapp.defacers.runner import make_spec, run_measured


def images(testdata: Path) -> list[tuple[str, Path]]:
    found = [("template-1mm", pydeface_file("mean_reg2mean.nii.gz"))]
    for path in sorted((testdata / "ds-faces").rglob("anat/*.nii.gz")):
        found.append((path.name.replace(".nii.gz", ""), path))
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--testdata", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared" / "testdata")
    parser.add_argument("--defacers", nargs="+", default=None)
    parser.add_argument("--images", nargs="+", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    defacers = args.defacers or [n for n in available_defacers()
                                 if get_defacer(n).kind == "native"]
    out = args.out or Path(tempfile.mkdtemp(prefix="bidsapp-bench-"))
    rows = []
    chosen = ([(p.name.replace(".nii.gz", ""), p) for p in args.images] if args.images
              else images(args.testdata))
    for label, path in chosen:
        work = out / label
        work.mkdir(parents=True, exist_ok=True)
        mask = work / "brain_mask.nii.gz"
        usage = run_child(["bidsapp.anatomy", "brainmask", str(path), str(mask),
                           str(args.threads)], log=work / "brainmask.log", cwd=work,
                          threads=args.threads)
        shape = "x".join(map(str, nib.load(path).shape[:3]))
        rows.append((label, shape, "deepbet brain mask", usage.wall_time_s, usage.peak_rss_mb,
                     "ok" if usage.returncode == 0 else "failed"))
        for name in defacers:
            spec = make_spec(defacer=name, image=path, out_dir=work / name, brain_mask=mask,
                             guard=get_defacer(name).guard_by_default, guard_margin_mm=5.0,
                             seed=42, threads=args.threads)
            record = run_measured(spec)
            rows.append((label, shape, name, record["wall_time_s"], record["peak_rss_mb"],
                         record["status"]))
            print(f"{label:<28} {name:<20} {record['wall_time_s']:7.1f} s "
                  f"{record['peak_rss_mb']:7.0f} MB {record['status']}", file=sys.stderr)
    print("\n| image | shape | step | wall time (s) | peak RSS (MB) | status |")
    print("|---|---|---|---:|---:|---|")
    for label, shape, name, wall, rss, status in rows:
        print(f"| {label} | {shape} | {name} | {wall:.1f} | {rss:.0f} | {status} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
