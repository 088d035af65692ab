"""Rerun one defacer on a finished run's inputs and compare the images byte for byte.

A change to a defacer must not change its outputs unless it says why. Given a baseline run's
nipype work folder (``--work-dir`` of ``bidsapp``), ``rerun`` runs the defacer again through the
runner (:mod:`bidsapp.defacers.runner`) with each image's recorded spec (same image, brain mask,
guard, seed, threads and options), writing into a mirror of the work folder's layout; ``compare``
then compares every image of a folder with the same relative path in another, first as files,
then as uncompressed NIfTI bytes (gzip headers may differ):

    python scripts/same_outputs.py rerun /work/runs/faces-work /tmp/new --defacer facecut
    python scripts/same_outputs.py compare /work/runs/faces-work /tmp/new \\
        --glob '**/deface_facecut_*/run/defaced.nii.gz'

Images carried over from a session T1w (``transfer`` specs) are skipped by ``rerun``: they are
a function of the T1w's mask, which is compared. Exit status 1 when any image differs.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path


def rerun(work: Path, out: Path, defacer: str) -> int:
    from bidsapp.defacers.runner import run_measured

    specs = sorted(work.glob(f"**/deface_{defacer}_*/run/spec.json"))
    for path in specs:
        spec = json.loads(path.read_text())
        if spec.get("transfer"):
            print(f"skip (carried from the T1w) {path.parent.parent.name}")
            continue
        spec["out_dir"] = str(out / path.parent.relative_to(work))
        record = run_measured(spec)
        print(f"{record['status']:6s} {path.parent.parent.name} {record.get('error') or ''}")
    return 0 if specs else 1


def _nifti_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def compare(first: Path, second: Path, pattern: str, skip_missing: bool = False) -> int:
    different = 0
    paths = sorted(first.glob(pattern))
    if skip_missing:
        paths = [path for path in paths if (second / path.relative_to(first)).is_file()]
    for path in paths:
        rel = path.relative_to(first)
        other = second / rel
        if not other.is_file():
            print(f"missing  {rel}")
            different += 1
        elif path.read_bytes() == other.read_bytes():
            print(f"same     {rel}")
        elif _nifti_bytes(path) == _nifti_bytes(other):
            print(f"same*    {rel} (same NIfTI bytes, gzip header differs)")
        else:
            print(f"DIFFERS  {rel}")
            different += 1
    print(f"{len(paths) - different} of {len(paths)} images identical")
    return 1 if different or not paths else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("rerun", help="rerun a defacer with a baseline work folder's specs")
    run.add_argument("work", type=Path)
    run.add_argument("out", type=Path)
    run.add_argument("--defacer", default="facecut")
    cmp_ = sub.add_parser("compare", help="compare images with the same relative paths")
    cmp_.add_argument("first", type=Path)
    cmp_.add_argument("second", type=Path)
    cmp_.add_argument("--glob", default="**/*.nii.gz")
    cmp_.add_argument("--skip-missing", action="store_true",
                      help="compare only the images present in both (rerun skips transfers)")
    args = parser.parse_args(argv)
    if args.command == "rerun":
        return rerun(args.work, args.out, args.defacer)
    return compare(args.first, args.second, args.glob, args.skip_missing)


if __name__ == "__main__":
    sys.exit(main())
