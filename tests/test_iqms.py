"""Anatomical IQMs against MRIQC 24.0.2's own functions, and the masks, on real images.

MRIQC is a reference only: ``pip install --no-deps mriqc==24.0.2`` (plus scikit-learn and
statsmodels, which its QI2 and summary statistics use). Its ``mriqc.config`` and ``nireports``
are stubbed (a logger and a plot function are all ``mriqc.qc.anatomical`` uses from them).
"""

from __future__ import annotations

import ast
import json
import logging
import math
import os
import sys
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bidsapp.anatomy.masks import compute_masks, landmark_planes, rotation_mask
from bidsapp.anatomy.segmentation import Tissues, image_data, segment_tissues
from bidsapp.metrics.iqms.defaced import iqm_differences, pair_iqms, record_iqms
from bidsapp.metrics.iqms.image import ImageIQMs, image_iqms, iqms_from_arrays
from bidsapp.metrics.iqms.measures import fwhm_classic
from bidsapp.metrics.iqms.stats import harmonize

#: Every anatomical IQM key MRIQC writes (mriqc/data/testdata/group_T1w.tsv).
MRIQC_KEYS = (
    ["cjv", "cnr", "efc", "fber"]
    + [f"fwhm_{a}" for a in ("avg", "x", "y", "z")]
    + [f"icvs_{t}" for t in ("csf", "gm", "wm")]
    + ["inu_med", "inu_range", "qi_1", "qi_2"]
    + [f"rpve_{t}" for t in ("csf", "gm", "wm")]
    + [f"size_{a}" for a in "xyz"]
    + [f"snr_{t}" for t in ("csf", "gm", "total", "wm")]
    + [f"snrd_{t}" for t in ("csf", "gm", "total", "wm")]
    + [f"spacing_{a}" for a in "xyz"]
    + [
        f"summary_{t}_{s}"
        for t in ("bg", "csf", "gm", "wm")
        for s in ("k", "mad", "mean", "median", "n", "p05", "p95", "stdv")
    ]
    + [f"tpm_overlap_{t}" for t in ("csf", "gm", "wm")]
    + ["wm2max"]
)
#: Relative tolerance; MRIQC rounds EFC, FBER and the summary statistics (not ``n``) to 4
#: decimals, so half a unit of the 4th decimal is allowed on top for those.
RTOL, ATOL_ROUNDED = 1e-3, 5e-5
FAST_IMAGES = {
    "ixi012": "sub-ixi012/anat/sub-ixi012_T1w.nii.gz",
    "xa30": "sub-xa30/anat/sub-xa30_run-1_T1w.nii.gz",
}


# --------------------------------------------------------------------------- MRIQC reference


@pytest.fixture(scope="module")
def mriqc_anat():
    mriqc = pytest.importorskip("mriqc")
    pytest.importorskip("sklearn")
    pytest.importorskip("statsmodels")
    try:
        import mriqc.config
    except ImportError:  # needs templateflow etc.; qc/anatomical only logs through it
        stub = types.ModuleType("mriqc.config")
        stub.loggers = types.SimpleNamespace(interface=logging.getLogger("mriqc.interface"))
        sys.modules["mriqc.config"] = stub
        mriqc.config = stub
    if getattr(mriqc.config.loggers, "interface", None) is None:  # imported, never loaded
        mriqc.config.loggers.interface = logging.getLogger("mriqc.interface")
    try:
        import nireports.reportlets.nuisance  # noqa: F401
    except ImportError:
        for name in ("nireports", "nireports.reportlets", "nireports.reportlets.nuisance"):
            sys.modules.setdefault(name, types.ModuleType(name))
        sys.modules["nireports.reportlets.nuisance"].plot_qi2 = lambda *a, **k: None
    anat = pytest.importorskip("mriqc.qc.anatomical")
    source = Path(mriqc.__file__).parent / "interfaces" / "anatomical.py"
    tree = ast.parse(source.read_text())
    node = next(
        n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "fuzzy_jaccard"
    )
    namespace = {"np": np}
    code = compile(ast.Module(body=[node], type_ignores=[]), str(source), "exec")
    exec(code, namespace)  # noqa: S102 - MRIQC's own source, test only
    return anat, namespace["fuzzy_jaccard"]


def mriqc_values(mriqc_anat, raw, masks, tissues, tmp_path, *, affine, qi2: bool = True) -> dict:
    """MRIQC's functions on our arrays, wired as its StructuralQC interface wires them.

    ``art_qi2`` gets the raw image and hat mask in RAS voxel order, as after MRIQC's conform
    step: its random subsample depends on the order of the voxels.

    ``art_qi2`` (scikit-learn KDE on up to 300,000 values, 600 chi2-fit iterations) alone takes
    10-20 s; ``qi2=False`` leaves it out.
    """
    anat, fuzzy_jaccard = mriqc_anat
    inudata = harmonize(tissues.corrected, tissues.probs["wm"]).astype(np.float64)
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
    out["cjv"] = anat.cjv(
        stats["wm"]["median"], stats["gm"]["median"], stats["wm"]["mad"], stats["gm"]["mad"]
    )
    out["fber"] = anat.fber(inudata, masks.head.astype(np.uint8), masks.rot.astype(np.uint8))
    out["efc"] = anat.efc(inudata, masks.rot.astype(np.uint8))
    out["wm2max"] = anat.wm2max(inudata, stats["wm"]["median"])
    out["qi_1"] = anat.art_qi1(air, masks.art.astype(np.uint8))
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
    if not qi2:
        return out
    cwd = os.getcwd()
    os.chdir(tmp_path)  # art_qi2 writes ./error.svg
    try:
        np.random.seed(1191935)
        ornt = nib.io_orientation(affine)
        hat = nib.orientations.apply_orientation(masks.hat, ornt).astype(np.uint8)
        ras = nib.orientations.apply_orientation(raw, ornt).astype(np.float64)
        out["qi_2"] = anat.art_qi2(ras, hat, save_plot=False)[0]
    finally:
        os.chdir(cwd)
    return out


def _rounded_by_mriqc(key: str) -> bool:
    return key in ("efc", "fber") or (key.startswith("summary_") and not key.endswith("_n"))


def assert_agree(ours: dict, theirs: dict) -> dict[str, float]:
    """Every MRIQC value within RTOL (relative), plus half a rounding unit where MRIQC rounds."""
    rel, bad = {}, []
    for key, expected in theirs.items():
        got = ours[key]
        diff = abs(got - expected)
        rel[key] = diff / abs(expected) if expected else diff
        atol = ATOL_ROUNDED if _rounded_by_mriqc(key) else 1e-12
        if not diff <= atol + RTOL * abs(expected):
            bad.append(f"{key}: ours {got!r} MRIQC {expected!r}")
    assert not bad, "\n".join(bad)
    return rel


# --------------------------------------------------------------------------- real images


_BRAIN_MASKS: dict[str, np.ndarray] = {}


def brain_mask_of(image: nib.Nifti1Image, key: str) -> np.ndarray:
    from bidsapp.anatomy.brainmask import deepbet_brain_mask

    if key not in _BRAIN_MASKS:
        _BRAIN_MASKS[key] = deepbet_brain_mask(image, threads=1)
    return _BRAIN_MASKS[key]


@pytest.fixture(scope="module")
def prepared(ds_faces):
    """IQMs, tissues and masks of the fast images, computed once for the module."""
    out = {}
    for key, rel in FAST_IMAGES.items():
        image = nib.load(ds_faces / rel)
        brain = brain_mask_of(image, key)
        out[key] = (image, brain, image_iqms(image, brain))
    return out


@pytest.mark.parametrize("key", ["ixi012", pytest.param("xa30", marks=pytest.mark.slow)])
def test_iqms_agree_with_mriqc(prepared, mriqc_anat, key, tmp_path):
    image, _, result = prepared[key]
    ours = result.iqms
    assert sorted(ours) == sorted(MRIQC_KEYS)
    assert all(math.isfinite(v) for v in ours.values()), ours
    theirs = mriqc_values(
        mriqc_anat, image_data(image), result.masks, result.tissues, tmp_path, affine=image.affine
    )
    assert_agree(ours, theirs)


@pytest.mark.slow
def test_iqms_agree_with_mriqc_1mm_template(pydeface_template, mriqc_anat, tmp_path):
    image = nib.load(pydeface_template)
    result = image_iqms(image, brain_mask_of(image, "template"))
    theirs = mriqc_values(
        mriqc_anat, image_data(image), result.masks, result.tissues, tmp_path, affine=image.affine
    )
    assert_agree(result.iqms, theirs)


def test_iqms_agree_with_mriqc_with_artifacts(prepared, mriqc_anat, tmp_path):
    """A bright blob in the background: non-empty artifact mask, qi_1 > 0, still in agreement."""
    image, brain, result = prepared["xa30"]
    data = image_data(image).copy()
    masks = result.masks
    from scipy import ndimage

    level = np.median(data[masks.hat][data[masks.hat] > 0])
    distance = ndimage.distance_transform_edt(~masks.head)
    distance[~ndimage.binary_erosion(masks.hat, iterations=3)] = 0
    far = np.unravel_index(np.argmax(distance), data.shape)
    box = tuple(slice(c - 2, c + 2) for c in far)
    data[box] = 100 * max(level, 1.0)
    artifact = nib.Nifti1Image(data, image.affine, image.header)
    tissues = result.tissues
    new_masks = compute_masks(artifact, brain, tissues, data=data)
    core = tuple(slice(c - 1, c + 1) for c in far)
    assert new_masks.art[core].all() and new_masks.art[box].sum() > 8
    ours = iqms_from_arrays(data, image.header.get_zooms(), new_masks, tissues,
                            affine=image.affine)
    assert ours["qi_1"] > 0
    assert_agree(
        ours,
        mriqc_values(
            mriqc_anat, data, new_masks, tissues, tmp_path, affine=image.affine, qi2=False
        ),
    )


def test_fwhm_matches_afni_classic_loop(prepared):
    """The vectorised FWHM against a voxel-by-voxel transcription of AFNI's classic estimator."""
    image, brain, _ = prepared["ixi012"]
    data = image_data(image).astype(np.float64)
    centre = [int(c) for c in np.argwhere(brain).mean(axis=0)]
    box = tuple(slice(c - 10, c + 10) for c in centre)
    x, m = data[box], brain[box].copy()
    m[:3] = False  # an irregular mask edge
    values = x[m]
    var = values.var(ddof=1)
    expected = []
    for axis in range(3):
        diffs = []
        for idx in np.argwhere(m):
            nxt = idx.copy()
            nxt[axis] += 1
            if nxt[axis] < x.shape[axis] and m[tuple(nxt)]:
                diffs.append(x[tuple(nxt)] - x[tuple(idx)])
        arg = 1 - 0.5 * np.var(diffs, ddof=1) / var
        expected.append(2.35482 * math.sqrt(-1 / (4 * math.log(arg))))
    np.testing.assert_allclose(fwhm_classic(x, m), expected, rtol=1e-9)


def test_harmonize_and_inu_definitions(prepared):
    _, _, result = prepared["xa30"]
    tissues = result.tissues
    from scipy import ndimage

    wm = ndimage.binary_erosion(
        tissues.probs["wm"] >= 0.9, ndimage.generate_binary_structure(3, 2)
    )
    scaled = harmonize(tissues.corrected, tissues.probs["wm"])
    assert np.median(scaled[wm]) == pytest.approx(1000, rel=1e-5)
    bias = tissues.bias[tissues.labels > 0]
    assert result.iqms["inu_med"] == pytest.approx(np.median(bias))
    assert result.iqms["inu_range"] == pytest.approx(np.ptp(np.percentile(bias, [5, 95])))


# --------------------------------------------------------------------------- segmentation


def test_segmentation_is_deterministic_and_consistent(prepared):
    image, brain, result = prepared["ixi012"]
    again = segment_tissues(image, brain)
    first = result.tissues
    assert isinstance(again, Tissues)
    np.testing.assert_array_equal(again.corrected, first.corrected)
    np.testing.assert_array_equal(again.labels, first.labels)
    for k in ("csf", "gm", "wm"):
        np.testing.assert_array_equal(again.probs[k], first.probs[k])
        assert again.probs[k].dtype == np.float32 and again.probs[k].shape == image.shape
    total = sum(first.probs.values())
    np.testing.assert_allclose(total[brain], 1, atol=1e-5)
    assert not total[~brain].any() and not first.labels[~brain].any()
    assert set(np.unique(first.labels[brain])) == {1, 2, 3}
    means = [first.corrected[first.labels == k].mean() for k in (1, 2, 3)]
    assert means[0] < means[1] < means[2]  # T1w: CSF < GM < WM
    assert np.isfinite(first.bias).all() and (first.bias > 0).all()
    assert first.corrected.dtype == np.float32 and first.labels.dtype == np.uint8


# --------------------------------------------------------------------------- masks


@pytest.mark.parametrize("key", sorted(FAST_IMAGES))
def test_masks_partition_the_background(prepared, key):
    image, brain, result = prepared[key]
    m = result.masks
    assert not (m.head & m.hat).any()
    assert not (m.air & m.art).any()
    np.testing.assert_array_equal(m.air | m.art, m.hat)
    assert (m.head[brain]).mean() > 0.999
    assert 0.2 < m.head.mean() < 0.9
    # nothing of the hat below the inion plane; the front half below the glabella is excluded
    ras = nib.io_orientation(image.affine)
    hat = nib.orientations.apply_orientation(m.hat, ras)
    planes = m.info["landmarks"]
    assert not hat[:, :, : int(planes["inion"])].any()
    ny = hat.shape[1]
    assert not hat[:, ny // 2 :, : int(planes["glabella"])].any()
    assert hat[:, :, -1].mean() > 0.5  # the top of the field of view is background
    # landmarks are inside the brain's height
    s_profile = np.flatnonzero(nib.orientations.apply_orientation(brain, ras).any(axis=(0, 1)))
    for height in (planes["glabella"], planes["inion"]):
        assert s_profile[0] - 10 < height < s_profile[-1]


def test_template_registration_covers_the_brain(prepared):
    for key in FAST_IMAGES:
        _, brain, result = prepared[key]
        tpm = result.masks.template
        warped = (tpm["csf"] + tpm["gm"] + tpm["wm"]) > 0.5
        dice = 2 * (warped & brain).sum() / (warped.sum() + brain.sum())
        assert dice > 0.85, (key, dice)


def test_masks_do_not_depend_on_voxel_order(prepared):
    """PSR-stored image and its RAS copy give the same masks and IQMs."""
    image, brain, result = prepared["ixi012"]
    ornt = nib.io_orientation(image.affine)
    canonical = nib.as_closest_canonical(image)
    brain_ras = nib.orientations.apply_orientation(brain, ornt).astype(bool)
    again = image_iqms(canonical, brain_ras)

    def ras(a):
        return nib.orientations.apply_orientation(a, ornt)

    for name in ("head", "hat", "rot"):
        a, b = ras(getattr(result.masks, name)), getattr(again.masks, name)
        dice = 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)
        assert dice > 0.98, (name, dice)
    for key in ("size_x", "size_y", "size_z", "spacing_x", "spacing_y", "spacing_z"):
        assert result.iqms[key] == again.iqms[key]
    for key in ("fwhm_x", "fwhm_y", "fwhm_z", "icvs_wm", "snr_wm", "cjv"):
        assert result.iqms[key] == pytest.approx(again.iqms[key], rel=0.03), key


def test_rotation_mask_finds_a_zero_frame(prepared):
    image, _, result = prepared["xa30"]
    data = image_data(image).copy()
    data[:, :, :8] = 0  # a zero-filled frame, as a rotation or a defacer leaves
    rot = rotation_mask(data)
    assert rot[:, :, 1:7].mean() > 0.95
    assert rot.sum() > result.masks.rot.sum()
    assert not rotation_mask(image_data(image) + 1).any()


def test_landmarks_fall_back_to_the_brain_mask(prepared):
    image, brain, _ = prepared["xa30"]
    planes = landmark_planes(None, image, brain)
    assert planes["source"] == "brain mask" and planes["glabella"] == planes["inion"]


# --------------------------------------------------------------------------- defaced images


def _deface(image: nib.Nifti1Image, brain: np.ndarray) -> nib.Nifti1Image:
    """Zero everything in front of and below the brain's front-bottom corner (RAS)."""
    ornt = nib.io_orientation(image.affine)
    data = nib.orientations.apply_orientation(image_data(image), ornt).copy()
    b = nib.orientations.apply_orientation(brain, ornt)
    ys, zs = np.flatnonzero(b.any(axis=(0, 2))), np.flatnonzero(b.any(axis=(0, 1)))
    y0, z0 = ys[-1] - (ys[-1] - ys[0]) // 5, zs[0] + (zs[-1] - zs[0]) // 3
    data[:, y0:, :z0] = 0
    back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), ornt)
    return nib.Nifti1Image(nib.orientations.apply_orientation(data, back), image.affine)


def test_defaced_with_original_masks(prepared):
    image, brain, result = prepared["xa30"]
    same = pair_iqms(image, image, result, modes=("original_masks",))
    assert set(same) == {"original_masks"}
    assert all(v == 0 for v in same["original_masks"]["delta"].values())

    defaced = _deface(image, brain)
    out = pair_iqms(image, defaced, result, modes=("original_masks",))["original_masks"]
    delta = out["delta"]
    assert sorted(delta) == sorted(MRIQC_KEYS)
    assert delta == iqm_differences(out["iqms"], result.iqms)
    unchanged = ["icvs_csf", "icvs_gm", "icvs_wm", "rpve_wm", "tpm_overlap_gm", "inu_med"]
    unchanged += ["summary_wm_median", "summary_gm_mean", "snr_wm", "fwhm_x"]
    for key in unchanged:
        assert delta[key] == 0, key  # the brain's voxels and all masks are unchanged
    assert delta["efc"] != 0  # the whole field of view changed
    # FBER changes too, unless the background is all zeros after MRIQC's clipping (FBER = -1)
    assert delta["fber"] != 0 or out["iqms"]["fber"] == result.iqms["fber"] == -1
    # the same defaced image stored in another voxel order (radiological) gives the same IQMs
    flipped = defaced.as_reoriented([[0, -1], [1, 1], [2, 1]])
    again = pair_iqms(image, flipped, result, modes=("original_masks",))
    assert again["original_masks"]["iqms"] == out["iqms"]


@pytest.mark.slow
def test_defaced_with_recomputed_masks(prepared):
    image, brain, result = prepared["ixi012"]
    defaced = _deface(image, brain)
    out = pair_iqms(image, defaced, result)
    assert set(out) == {"original_masks", "recomputed_masks"}
    recomputed = out["recomputed_masks"]
    assert sorted(recomputed["iqms"]) == sorted(MRIQC_KEYS)
    assert all(math.isfinite(v) for v in recomputed["iqms"].values())
    assert abs(recomputed["delta"]["icvs_wm"]) < 0.05  # same brain, re-segmented
    assert isinstance(result, ImageIQMs)
    # brain mask and tissues computed elsewhere on the defaced image (stored radiologically)
    flipped = defaced.as_reoriented([[0, -1], [1, 1], [2, 1]])
    mask = brain_mask_of(flipped, "ixi012 defaced flipped")
    reused = pair_iqms(
        image, flipped, result, defaced_brain_mask=mask,
        defaced_tissues=segment_tissues(flipped, mask), modes=("recomputed_masks",),
    )["recomputed_masks"]["iqms"]  # fmt: skip
    assert reused == pytest.approx(recomputed["iqms"], rel=1e-6)


def test_record_iqms_is_json_ready(prepared):
    image, brain, result = prepared["ixi012"]
    report = record_iqms(
        image, brain, {"cut": _deface(image, brain)}, reference=result,
        modes=("original_masks",),
    )  # fmt: skip
    text = json.dumps(report, allow_nan=False)
    assert report["original"] == pytest.approx(result.iqms)
    assert set(report["defacers"]["cut"]) == {"original_masks"}
    assert "delta" in json.loads(text)["defacers"]["cut"]["original_masks"]


@pytest.mark.slow
def test_flair_classes_are_named_after_the_template(ds_faces):
    """FLAIR: GM is brighter than WM; the template overlap, not intensity, names the classes."""
    image = nib.load(ds_faces / "sub-uber/anat/sub-uber_FLAIR.nii.gz")
    result = image_iqms(image, brain_mask_of(image, "flair"))
    tissues = result.tissues
    means = {
        k: tissues.corrected[tissues.labels == i].mean()
        for i, k in enumerate(("csf", "gm", "wm"), 1)
    }
    assert means["csf"] < means["wm"] < means["gm"]
    assert all(math.isfinite(v) for v in result.iqms.values())
