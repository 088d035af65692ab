"""Downstream impact: brain extraction and tissue volumes again on the defaced image."""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
import pytest
from test_metrics_face import reference_of

from bidsapp.metrics.defacing import defacing_metrics
from bidsapp.metrics.downstream import KEYS, compare, dice, downstream_metrics, volumes_ml


@dataclass(frozen=True)
class FakeTissues:
    probs: dict


def _tissues(mask, csf=0.2, gm=0.3, wm=0.5):
    return FakeTissues({name: np.where(mask, share, 0).astype(np.float32)
                        for name, share in (("csf", csf), ("gm", gm), ("wm", wm))})


@pytest.fixture(scope="module")
def ixi012(ds_faces):
    return reference_of(ds_faces / "sub-ixi012" / "anat" / "sub-ixi012_T1w.nii.gz")


def test_dice():
    a = np.zeros((4, 4), dtype=bool)
    b = a.copy()
    assert np.isnan(dice(a, b))
    a[:2] = True
    b[1:3] = True
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0


def test_volumes_and_changes_from_posteriors():
    mask = np.zeros((10, 10, 10), dtype=bool)
    mask[:5] = True  # 500 voxels of 8 mm^3 = 4 ml
    volumes = volumes_ml(mask, _tissues(mask), (2.0, 2.0, 2.0))
    assert volumes["tiv"] == pytest.approx(4.0)
    assert volumes["gm"] == pytest.approx(1.2) and volumes["wm"] == pytest.approx(2.0)
    assert volumes["brain_volume"] == pytest.approx(3.2)
    same = compare(mask, volumes, mask, volumes)
    assert set(same) == set(KEYS)
    assert same["bet_dice"] == 1.0 and all(same[k] == 0.0 for k in KEYS if k != "bet_dice")
    smaller = mask.copy()
    smaller[4] = False
    changed = compare(mask, volumes, smaller, volumes_ml(smaller, _tissues(smaller, gm=0.6,
                                                                           wm=0.2), (2,) * 3))
    assert changed["tiv_change_pct"] == pytest.approx(-20.0)
    assert changed["gm_change_pct"] == pytest.approx(100 * (0.6 * 0.8 - 0.3) / 0.3)
    assert changed["bet_dice"] == pytest.approx(2 * 400 / 900)
    assert np.isnan(compare(mask, volumes, mask, volumes_ml(mask, None, (2,) * 3))
                    ["gm_change_pct"])


def test_downstream_runs_the_given_steps_on_the_defaced_image(ixi012):
    """With stand-in brain extraction and segmentation, the defaced image is what they see."""
    seen = []

    def masker(image, threads=1):
        seen.append(image)
        return np.roll(ixi012.brain_mask, 1, axis=0)

    def segmenter(image, mask, threads=1, seed=42):
        return _tissues(mask)

    zooms = ixi012.image.header.get_zooms()
    original = volumes_ml(ixi012.brain_mask, _tissues(ixi012.brain_mask), zooms)
    record, anatomy = downstream_metrics(ixi012.brain_mask, original, ixi012.image,
                                         brain_masker=masker, segmenter=segmenter)
    assert np.array_equal(anatomy.brain_mask, np.roll(ixi012.brain_mask, 1, axis=0))
    assert seen == [ixi012.image]
    assert 0.9 < record["bet_dice"] < 1.0
    assert record["tiv_change_pct"] == pytest.approx(
        100 * (np.roll(ixi012.brain_mask, 1, 0).sum() / ixi012.brain_mask.sum() - 1))


@pytest.mark.slow
def test_quickshear_barely_changes_brain_extraction_and_volumes(ixi012):
    from quickshear import quickshear

    image = ixi012.image
    ones = nib.Nifti1Image(np.ones(image.shape[:3], dtype=np.uint8), image.affine)
    mask = nib.Nifti1Image(ixi012.brain_mask.astype(np.uint8), image.affine)
    kept = np.asanyarray(quickshear(ones, mask, buff=10).dataobj).astype(bool)
    defaced = nib.Nifti1Image(np.where(kept, np.asanyarray(image.dataobj), 0), image.affine)
    volumes = ixi012.volumes
    assert 1000 < volumes["tiv"] < 2000 and volumes["gm"] > 300 and volumes["wm"] > 300
    record = defacing_metrics(ixi012, defaced, render=False)
    assert record["bet_dice"] > 0.98
    assert abs(record["tiv_change_pct"]) < 2
    assert abs(record["brain_volume_change_pct"]) < 2
    for tissue in ("gm", "wm", "csf"):
        assert abs(record[f"{tissue}_change_pct"]) < 5, tissue
    same = defacing_metrics(ixi012, image, render=False)
    assert same["bet_dice"] == 1.0 and same["tiv_change_pct"] == 0.0


@pytest.mark.slow
def test_flair_tissue_volumes_are_named_after_the_template(ds_faces):
    """On a FLAIR (GM brighter than WM) the downstream classes used to be named by the T1w
    intensity order, so ``wm_change_pct`` was grey matter's; the IQMs' template names them."""
    from bidsapp.anatomy.brainmask import deepbet_brain_mask
    from bidsapp.metrics.iqms.image import image_iqms

    image = nib.load(ds_faces / "sub-uber" / "anat" / "sub-uber_FLAIR.nii.gz")
    brain = deepbet_brain_mask(image)
    original = image_iqms(image, brain)  # registers the template once, as the metrics step
    assert original.masks.template is not None
    zooms = image.header.get_zooms()[:3]
    record, anatomy = downstream_metrics(brain, volumes_ml(brain, original.tissues, zooms),
                                         image, template=original.masks.template)
    tissues = anatomy.tissues
    means = {k: float(tissues.corrected[tissues.labels == i].mean())
             for i, k in enumerate(("csf", "gm", "wm"), 1)}
    assert means["csf"] < means["wm"] < means["gm"], means
    # the same image again: every class matches its namesake in the original
    for key in ("gm_change_pct", "wm_change_pct", "csf_change_pct"):
        assert abs(record[key]) < 1.0, (key, record[key])


@pytest.mark.slow
def test_segmentation_leaves_no_temporary_file(ixi012, tmp_path, monkeypatch):
    """antspyx's Atropos writes its posteriors to files it never removes (1,842 of them had
    piled up in this machine's /tmp); the segmentation removes them."""
    import tempfile

    from bidsapp.anatomy.segmentation import segment_tissues

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    tissues = segment_tissues(ixi012.image, ixi012.brain_mask)
    assert tissues.probs["wm"][ixi012.brain_mask].mean() > 0.1
    assert tempfile.tempdir == str(tmp_path)
    assert list(tmp_path.iterdir()) == []
