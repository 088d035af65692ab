"""Anatomical IQMs: bidsapp's vectorised functions vs MRIQC 24.0.2's, on the same arrays.

    python benchmarks/bench_iqms.py [--repeats 3] [--image PATH]

Default image: pydeface's 1 mm head template (176 x 256 x 256). The brain mask (deepbet), the
N4 + segmentation and the masks are computed once and shared by both sides; then each side's
IQM functions run ``--repeats`` times, alternating, in this process, and the median times are
printed as one table. MRIQC's side is its ``mriqc.qc.anatomical`` functions (summary_stats, snr,
snr_dietrich, cnr, cjv, fber, efc, wm2max, art_qi1, art_qi2 without the plot, volume_fraction,
rpve) plus ``fuzzy_jaccard`` read from its ``interfaces/anatomical.py``; AFNI's FWHM and the
harmonisation are not MRIQC Python functions, so only our side pays for them. Requires
``pip install --no-deps mriqc==24.0.2`` (and scikit-learn, statsmodels).
"""

from __future__ import annotations

import argparse
import ast
import logging
import os
import sys
import tempfile
import time
import types
from pathlib import Path

import nibabel as nib
import numpy as np


def load_mriqc():
    """``mriqc.qc.anatomical`` without MRIQC's heavy dependencies (config, nireports stubbed)."""
    import mriqc

    try:
        import mriqc.config
    except ImportError:  # needs templateflow, nipype settings...: a logger is all qc uses
        stub = types.ModuleType("mriqc.config")
        stub.loggers = types.SimpleNamespace(interface=logging.getLogger("mriqc.interface"))
        sys.modules["mriqc.config"] = stub
        mriqc.config = stub
    try:
        import nireports.reportlets.nuisance  # noqa: F401
    except ImportError:
        for name in ("nireports", "nireports.reportlets", "nireports.reportlets.nuisance"):
            sys.modules.setdefault(name, types.ModuleType(name))
        sys.modules["nireports.reportlets.nuisance"].plot_qi2 = lambda *a, **k: None
    from mriqc.qc import anatomical

    return anatomical


def mriqc_function(module_file: str, name: str):
    """One top-level function of an MRIQC source file, compiled on its own (no package import)."""
    tree = ast.parse(Path(module_file).read_text())
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    namespace = {"np": np}
    code = compile(ast.Module(body=[node], type_ignores=[]), module_file, "exec")
    exec(code, namespace)  # noqa: S102 - MRIQC's own source, benchmark only
    return namespace[name]


def mriqc_iqms(anat, fuzzy_jaccard, raw, inudata, masks, tissues, affine, seed: int = 1191935):
    """All IQMs with MRIQC's functions, wired as its StructuralQC interface wires them.

    QI2 gets the raw image and hat in RAS voxel order, as after MRIQC's conform step.
    """
    pvms = {k: tissues.probs[k].astype(np.float64) for k in ("csf", "gm", "wm")}
    pvmdata = [pvms[k].copy() for k in ("csf", "gm", "wm")]
    air = masks.air.astype(np.uint8)
    stats = anat.summary_stats(inudata, {**pvms, "bg": air})
    out = {}
    for k in ("csf", "wm", "gm"):
        out[f"snr_{k}"] = anat.snr(stats[k]["median"], stats[k]["stdv"], stats[k]["n"])
        out[f"snrd_{k}"] = anat.snr_dietrich(
            stats[k]["median"], mad_air=stats["bg"]["mad"], sigma_air=stats["bg"]["stdv"]
        )
    out["snr_total"] = float(np.mean([out["snr_csf"], out["snr_wm"], out["snr_gm"]]))
    out["snrd_total"] = float(np.mean([out["snrd_csf"], out["snrd_wm"], out["snrd_gm"]]))
    out["cnr"] = anat.cnr(
        stats["wm"]["median"], stats["gm"]["median"], stats["bg"]["stdv"],
        stats["wm"]["stdv"], stats["gm"]["stdv"],
    )  # fmt: skip
    out["fber"] = anat.fber(inudata, masks.head.astype(np.uint8), masks.rot.astype(np.uint8))
    out["efc"] = anat.efc(inudata, masks.rot.astype(np.uint8))
    out["wm2max"] = anat.wm2max(inudata, stats["wm"]["median"])
    out["qi_1"] = anat.art_qi1(air, masks.art.astype(np.uint8))
    out["cjv"] = anat.cjv(
        stats["wm"]["median"], stats["gm"]["median"], stats["wm"]["mad"], stats["gm"]["mad"]
    )
    for k, v in anat.volume_fraction(pvmdata).items():
        out[f"icvs_{k}"] = v
    for k, v in anat.rpve(pvmdata, tissues.labels).items():
        out[f"rpve_{k}"] = v
    template = [masks.template[k].astype(np.float64) for k in ("csf", "gm", "wm")]
    for k, v in zip(("csf", "gm", "wm"), fuzzy_jaccard(list(pvms.values()), template)):
        out[f"tpm_overlap_{k}"] = v
    for label, values in stats.items():
        for stat, value in values.items():
            out[f"summary_{label}_{stat}"] = value
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:  # art_qi2 writes ./error.svg
        os.chdir(tmp)
        try:
            np.random.seed(seed)
            ornt = nib.io_orientation(affine)
            hat = nib.orientations.apply_orientation(masks.hat, ornt).astype(np.uint8)
            ras = nib.orientations.apply_orientation(raw, ornt)
            out["qi_2"] = anat.art_qi2(ras, hat, save_plot=False)[0]
        finally:
            os.chdir(cwd)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
    from bidsapp.anatomy.brainmask import deepbet_brain_mask
    from bidsapp.anatomy.masks import compute_masks
    from bidsapp.anatomy.segmentation import image_data, segment_tissues
    from bidsapp.anatomy.templates import pydeface_file
    from bidsapp.metrics.iqms.image import iqms_from_arrays
    from bidsapp.metrics.iqms.stats import harmonize

    anat = load_mriqc()
    import mriqc

    fuzzy_jaccard = mriqc_function(
        str(Path(mriqc.__file__).parent / "interfaces" / "anatomical.py"), "fuzzy_jaccard"
    )

    path = args.image or pydeface_file("mean_reg2mean.nii.gz")
    image = nib.as_closest_canonical(nib.load(path))  # RAS, as MRIQC's conform step
    prep = {}
    t0 = time.perf_counter()
    brain = deepbet_brain_mask(image, threads=1)
    prep["brain mask (deepbet)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tissues = segment_tissues(image, brain, threads=1)
    prep["N4 + segmentation"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    raw = image_data(image)
    masks = compute_masks(image, brain, tissues, data=raw)
    prep["masks (registration, head, hat, ...)"] = time.perf_counter() - t0
    zooms = image.header.get_zooms()[:3]
    inudata = harmonize(tissues.corrected, tissues.probs["wm"]).astype(np.float64)
    raw64 = raw.astype(np.float64)

    ours_t, theirs_t, ours_cpu, theirs_cpu = [], [], [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        ours = iqms_from_arrays(raw, zooms, masks, tissues, affine=image.affine)
        ours_t.append(time.perf_counter() - t0)
        ours_cpu.append(time.process_time() - c0)
        t0, c0 = time.perf_counter(), time.process_time()
        theirs = mriqc_iqms(anat, fuzzy_jaccard, raw64, inudata, masks, tissues, image.affine)
        theirs_t.append(time.perf_counter() - t0)
        theirs_cpu.append(time.process_time() - c0)

    print(f"image: {path} {image.shape} zooms {tuple(round(float(z), 4) for z in zooms)}")
    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; ITK threads 1")
    for name, seconds in prep.items():
        print(f"  (shared, once) {name:38s} {seconds:6.2f} s")
    ours_med, theirs_med = float(np.median(ours_t)), float(np.median(theirs_t))
    ours_c, theirs_c = float(np.median(ours_cpu)), float(np.median(theirs_cpu))
    print()
    print("| IQM | bidsapp | MRIQC 24.0.2 functions | rel. diff |")
    print("|---|---|---|---|")
    worst = 0.0
    for key in sorted(ours):
        if key in theirs:
            a, b = float(ours[key]), float(theirs[key])
            rel = abs(a - b) / max(abs(b), 1e-12) if a != b else 0.0
            rounded = key in ("efc", "fber") or (key.startswith("summary_") and key[-2:] != "_n")
            worst = max(worst, rel if not (rounded and abs(a - b) <= 5e-5) else 0.0)
            print(f"| {key} | {a:.6g} | {b:.6g} | {rel:.1e} |")
        else:
            print(f"| {key} | {float(ours[key]):.6g} | (AFNI / inline) | |")
    print()
    print(f"max relative difference (beyond MRIQC's 4-decimal rounding): {worst:.2e}")
    print(f"| timing (median of {args.repeats}, same run) | wall s | CPU s |")
    print("|---|---|---|")
    print("| bidsapp iqms_from_arrays (all IQMs, harmonise, FWHM) | "
          f"{ours_med:.2f} | {ours_c:.2f} |")
    print(
        f"| MRIQC 24.0.2 functions (without FWHM/harmonise) | {theirs_med:.2f} | {theirs_c:.2f} |"
    )
    print(f"| ratio bidsapp / MRIQC | {ours_med / theirs_med:.3f} | {ours_c / theirs_c:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
