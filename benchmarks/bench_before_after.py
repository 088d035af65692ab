"""A whole participant run before and after a change, side by side in one invocation.

    python benchmarks/bench_before_after.py [--ref baa9fec] [--testdata ../shared/testdata]
        [--participants uber xa30] [--defacers facecut facemask quickshear niimath]
        [--nprocs 2] [--head ds-more/sub-prisma/anat/sub-prisma_T1w.nii.gz] [--repeats 3]
        [--out DIR]

*Before* is ``--ref`` exported (``git archive``) into a temporary folder; *after* is this
working tree, or ``--after-ref`` exported the same way. Both run with the same Python
environment, on the same images and settings:

1. the head: facecut and ``niimath -deface`` (through bidsapp's runner, each in a child process
   of its own, as in the pipeline; the brain mask computed once beforehand), and the niimath
   binary alone with pydeface's template and mask, ``--repeats`` times, before and after
   alternately; the median wall time, CPU time (the process and the
   tools it ran) and peak RSS of each (CPU time is the figure to trust on a busy machine);
2. one whole participant run (``bidsapp ... participant --nprocs N``) with each version:
   wall time, CPU time of every process and peak RSS of the largest one;
3. :mod:`bidsapp.compare_runs` on the two output folders (the outputs must be the same).

Prints one table; exit status 1 when the outputs differ.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_TESTDATA = REPO.parents[0] / "shared" / "testdata"


def export_ref(ref: str, dest: Path) -> Path:
    """The tree of git ``ref`` in ``dest`` (no change to the repository)."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def timed(args: list[str], source: Path, log: Path, *, python: bool = True
          ) -> tuple[float, float, int, float]:
    """Run ``python ARGS`` (or ``ARGS`` as a command) with ``source`` first on the path: (wall
    s, peak RSS MB, exit, CPU s of the process and the processes it waited for)."""
    env = {**os.environ, "PYTHONPATH": str(source), "NIPYPE_NO_ET": "1"}
    start = time.perf_counter()
    with log.open("wb") as handle:
        proc = subprocess.Popen([sys.executable, *args] if python else args, stdout=handle,
                                stderr=subprocess.STDOUT, env=env, cwd=log.parent)
        _, status, usage = os.wait4(proc.pid, 0)
    return (time.perf_counter() - start, usage.ru_maxrss / 1024.0,
            os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime)


def head_runs(head: Path, sources: dict[str, Path], out: Path, repeats: int) -> list[tuple]:
    """facecut and niimath on ``head`` with each version, alternately; medians per cell."""
    from bidsapp.defacers.runner import make_spec
    from bidsapp.io import atomic_write_json

    work = out / "head"
    work.mkdir(parents=True)
    mask = work / "brain_mask.nii.gz"
    timed(["-m", "bidsapp.anatomy", "brainmask", str(head), str(mask), "1"],
          sources["after"], work / "brainmask.log")
    cells: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for repeat in range(repeats):
        for version, source in sources.items():
            for defacer in ("facecut", "niimath"):
                run = work / f"{version}-{defacer}-{repeat}"
                run.mkdir()
                spec = make_spec(defacer=defacer, image=head, out_dir=run, brain_mask=mask,
                                 guard=True, guard_margin_mm=5.0, seed=42, threads=1)
                atomic_write_json(run / "spec.json", spec)
                wall, rss, code, cpu = timed(
                    ["-m", "bidsapp.defacers.runner", str(run / "spec.json")], source,
                    run / "defacer.log")
                if code != 0:
                    raise RuntimeError(f"{defacer} ({version}) failed: see {run}/defacer.log")
                cells.setdefault((defacer, version), []).append((wall, rss, cpu))
        # the C tool alone, as the runner calls it (no Python, no reading back its output)
        run = work / f"niimath-binary-{repeat}"
        run.mkdir()
        wall, rss, code, cpu = timed(niimath_command(head, run), sources["after"],
                                     run / "niimath.log", python=False)
        if code != 0:
            raise RuntimeError(f"niimath -deface failed: see {run}/niimath.log")
        cells.setdefault(("niimath -deface (binary alone)", "-"), []).append((wall, rss, cpu))
    return [(f"{defacer} on {head.name}", version,
             *(statistics.median(run[i] for run in runs) for i in range(3)))
            for (defacer, version), runs in sorted(cells.items())]


def niimath_command(head: Path, out: Path) -> list[str]:
    """``niimath HEAD -deface TEMPLATE MASK OUT``: the command bidsapp's niimath defacer runs."""
    from bidsapp.anatomy.templates import pydeface_file
    from bidsapp.defacers.niimath import FACE_MASK, TEMPLATE, niimath_executable

    return [niimath_executable() or "niimath", str(head), "-deface",
            str(pydeface_file(TEMPLATE)), str(pydeface_file(FACE_MASK)),
            str(out / "niimath_defaced.nii.gz")]


def participant_run(version: str, source: Path, args, out: Path) -> tuple:
    folder = out / version
    folder.mkdir()
    # one working folder for both versions, emptied between them: records name files in it
    # (niimath's command), so both must see the same path for their records to compare equal
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    cli = ["-m", "bidsapp", str(args.testdata / "ds-faces"), str(folder / "out"), "participant",
           "--participant-label", *args.participants, "--defacers", *args.defacers,
           "--nprocs", str(args.nprocs), "-w", str(work)]
    wall, rss, code, cpu = timed(cli, source, folder / "run.log")
    return ("participant run", version, wall, rss, cpu, code)


def _print(rows: list[tuple]) -> list[tuple]:
    for step, version, wall, rss, cpu, code in rows:
        failed = "" if code == 0 else f" (exit {code})"
        print(f"| {step} | {version} | {wall:.1f} s{failed} | {cpu:.1f} s | {rss:.0f} MB |",
              flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="baa9fec", help="git ref of the 'before' version")
    parser.add_argument("--after-ref", default=None,
                        help="git ref of the 'after' version (default: this working tree)")
    parser.add_argument("--testdata", type=Path, default=DEFAULT_TESTDATA)
    parser.add_argument("--participants", nargs="+", default=["uber", "xa30"])
    parser.add_argument("--defacers", nargs="+",
                        default=["facecut", "facemask", "quickshear", "niimath"])
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--head", type=Path,
                        default=Path("ds-more/sub-prisma/anat/sub-prisma_T1w.nii.gz"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--new-keys", nargs="*", default=[],
                        help="record keys only the 'after' version writes (provenance added "
                             "since --ref), left out of the comparison where 'before' lacks them")
    parser.add_argument("--skip-head", action="store_true")
    parser.add_argument("--skip-run", action="store_true")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="bidsapp-before-after-"))
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bidsapp-before-") as tmp:
        after = (export_ref(args.after_ref, Path(tmp) / "after") if args.after_ref else REPO)
        sources = {"before": export_ref(args.ref, Path(tmp) / "src"), "after": after}
        print(f"before: {args.ref}; after: {args.after_ref or f'{REPO} (working tree)'}; load "
              f"{os.getloadavg()[0]:.1f}; results in {out}", flush=True)
        rows = []
        print("\n| step | version | wall time | CPU time | peak RSS |\n|---|---|---:|---:|---:|")
        if not args.skip_head:
            rows += _print([(*row, 0) for row in head_runs(args.testdata / args.head, sources,
                                                           out, args.repeats)])
        if not args.skip_run:
            rows += _print([participant_run(v, s, args, out) for v, s in sources.items()])
    runs = {v: w for step, v, w, *_ in rows if step == "participant run"}
    if len(runs) == 2:
        print(f"\nwhole run: {runs['before'] / runs['after']:.2f}x faster "
              f"(load at the end {os.getloadavg()[0]:.1f})")
        from bidsapp.compare_runs import compare_outputs

        result = compare_outputs(out / "before" / "out", out / "after" / "out",
                                 new_keys=tuple(args.new_keys))
        if args.new_keys:
            print(f"(keys only 'after' writes, not compared: {', '.join(args.new_keys)})")
        print("\n".join(result.lines()))
        return 0 if result.identical else 1
    return 0


if __name__ == "__main__":
    shutil.which("git") or sys.exit("git is needed to export the 'before' version")
    sys.exit(main())
