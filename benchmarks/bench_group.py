"""Benchmark of the group level on synthetic participant results (default 1,000 rows).

    python benchmarks/bench_group.py [--rows 1000] [--defacers 5] [--keep DIR]

Writes ``rows`` defacer records (images x defacers, half T1w and half FLAIR, with brain, face,
detection, downstream metrics and 68 IQMs and their changes in two modes each, in the layout
of ``bidsapp.metrics.measure``, a few failures) and ratings into a temporary
output folder, then times the pure steps (:func:`bidsapp.results.aggregate`,
:func:`bidsapp.group.summarise`) and the whole group level (:func:`bidsapp.group.run_group`:
TSVs, plots, HTML). No images: the gallery shows placeholders, as for participants whose report
was not made.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

DEFACERS = ("quickshear", "deepdefacer", "facemask", "pydeface", "mrideface", "fsldeface",
            "mridefacer", "afnideface", "afnireface", "spmdeface")
#: As many IQMs as bidsapp.metrics.iqms computes (MRIQC's anatomical set), in two modes.
IQMS = ["efc", "fber", "wm2max", "qi_2", "snrd_total", "cnr", "cjv"] + \
    [f"iqm{i:02d}" for i in range(61)]
MODES = ("original_masks", "recomputed_masks")


def write_results(root: Path, rows: int, defacers: int, seed: int = 0) -> int:
    """Write about ``rows`` synthetic records; return how many were written."""
    rng = np.random.default_rng(seed)
    names = DEFACERS[:defacers]
    images = int(np.ceil(rows / defacers))
    (root / "dataset_description.json").write_text(json.dumps({
        "Name": "bench", "BIDSVersion": "1.10.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "bidsapp", "Version": "bench"}]}))
    written, ratings = 0, []
    for index in range(images):
        subject = f"{index // 2:04d}"
        suffix = "T1w" if index % 2 == 0 else "FLAIR"
        folder = root / f"sub-{subject}" / "anat"
        folder.mkdir(parents=True, exist_ok=True)
        key = f"sub-{subject}_{suffix}"
        (folder / f"sub-{subject}_desc-original_{suffix}.json").write_text(json.dumps(
            {"status": "ok", "error": None, "shape": [176, 256, 256], "mode": "direct"}))
        for rank, name in enumerate(names):
            if written >= rows:
                break
            failed = rng.random() < 0.02
            record = {"defacer": name, "status": "failed" if failed else "ok",
                      "error": "synthetic failure" if failed else None, "version": "1.0",
                      "title": name, "kind": "native", "mode": "direct",
                      "parameters": {"p": rank}, "guard": {"applied": rank == 2},
                      "wall_time_s": float(rng.gamma(2, 5 + 10 * rank)),
                      "peak_rss_mb": float(rng.normal(300 + 200 * rank, 40)),
                      "cpu_time_s": float(rng.gamma(2, 4)),
                      "log": f"logs/sub-{subject}/{key}_desc-{name}.log"}
            if not failed:
                removed = float(np.clip(rng.normal(0.7 + 0.05 * rank, 0.12), 0, 1))
                original = {q: float(rng.normal(3, 1)) for q in IQMS}
                brain = int(rng.random() < 0.1) * int(rng.integers(1, 500))
                record.update(  # the layout bidsapp.metrics.measure writes
                    altered_voxels=int(rng.integers(1e5, 3e5)), altered_ml=200.0,
                    metrics={"brain_changed_voxels": brain, "brain_altered": brain > 0,
                             "margin_changed_voxels": brain * 3,
                             "face_altered_pct": 100 * removed,
                             **{f"{r}_altered_pct": float(rng.uniform(0, 100))
                                for r in ("eyes", "nose", "mouth", "chin", "ears")},
                             "nose_tip_removed": bool(removed > 0.6),
                             "face_detected": bool(removed < 0.5),
                             "bet_dice": float(rng.uniform(0.97, 1.0)),
                             **{f"{t}_change_pct": float(rng.normal(0, 0.3))
                                for t in ("tiv", "gm", "wm", "csf")}},
                    iqms={mode: {"iqms": original,
                                 "delta": {q: float(rng.normal(0, 0.1)) for q in IQMS}}
                          for mode in MODES},
                    timings_s={"brain": 0.1, "face": 2.0, "downstream": 30.0, "iqms": 15.0})
            (folder / f"sub-{subject}_desc-{name}_{suffix}.json").write_text(json.dumps(record))
            written += 1
            if rng.random() < 0.2:
                ratings.append({"image": key, "defacer": name, "rating": "pass", "notes": "",
                                "rater": "bench", "time": "2026-01-01T00:00:00Z"})
    (root / "ratings").mkdir(exist_ok=True)
    (root / "ratings" / "bench.json").write_text(json.dumps(
        {"format": "bidsapp-ratings", "version": 1, "ratings": ratings}))
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--defacers", type=int, default=5, choices=range(1, len(DEFACERS) + 1))
    parser.add_argument("--keep", type=Path, default=None,
                        help="write the synthetic output folder here and keep it")
    args = parser.parse_args(argv)

    from bidsapp import group, results
    from bidsapp.settings import Settings

    root = args.keep or Path(tempfile.mkdtemp(prefix="bidsapp-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        count = write_results(root, args.rows, args.defacers)
        start = time.perf_counter()
        table = results.aggregate(root)
        aggregated = time.perf_counter()
        summary = group.summarise(table)
        group.recommend(summary)
        summarised = time.perf_counter()
        settings = Settings(bids_dir=root, output_dir=root, analysis_level="group",
                            work_dir=root / "work")
        code = group.run_group(settings)
        finished = time.perf_counter()
        report = root / "group_report.html"
        print(f"rows: {count} ({len(table)} aggregated, {table.shape[1]} columns), "
              f"defacers: {args.defacers}")
        print(f"aggregate (read + flatten + verdicts): {aggregated - start:6.2f} s")
        print(f"summarise + recommend:                 {summarised - aggregated:6.2f} s")
        print(f"run_group (everything, written):       {finished - summarised:6.2f} s "
              f"(exit code {code}; report {report.stat().st_size / 1e6:.1f} MB)")
        return code
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
