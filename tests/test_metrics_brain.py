"""Brain preservation on real data: changed brain voxels are counted, a sheared face is not."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from test_metrics_face import reference_of

from bidsapp.anatomy.brainmask import dilate_mm
from bidsapp.metrics.brain import MARGIN_MM, brain_preservation, changed_voxels, margin_mask


@pytest.fixture(scope="module")
def ixi012(ds_faces):
    reference = reference_of(ds_faces / "sub-ixi012" / "anat" / "sub-ixi012_T1w.nii.gz")
    return reference.image, reference.brain_mask


def test_changed_voxels_compares_values_and_nans():
    a = np.array([1.0, np.nan, 3.0, 4.0])
    b = np.array([1.0, np.nan, 0.0, np.nan])
    assert changed_voxels(a, b).tolist() == [False, False, True, True]
    with pytest.raises(ValueError):
        changed_voxels(a, b[:3])


def test_original_against_itself_changes_nothing(ixi012):
    image, brain = ixi012
    data = np.asanyarray(image.dataobj)
    record = brain_preservation(changed_voxels(data, data.copy()), brain,
                                image.header.get_zooms())
    assert record["brain_changed_voxels"] == 0
    assert record["margin_changed_voxels"] == 0
    assert record["brain_altered"] is False
    assert record["margin_mm"] == MARGIN_MM


def test_counts_volume_and_percentage_of_changed_brain_and_margin(ixi012):
    image, brain = ixi012
    zooms = image.header.get_zooms()
    data = np.asanyarray(image.dataobj).copy()
    original = data.copy()
    inside = np.argwhere(brain)[:100]
    data[tuple(inside.T)] = original[tuple(inside.T)] + 1
    margin = margin_mask(brain, zooms)
    shell = np.argwhere(margin & ~brain)[:40]
    data[tuple(shell.T)] = original[tuple(shell.T)] + 1
    record = brain_preservation(changed_voxels(original, data), brain, zooms)
    voxel_ml = float(np.prod(zooms[:3])) / 1000
    assert record["brain_changed_voxels"] == 100
    assert record["brain_changed_ml"] == pytest.approx(100 * voxel_ml)
    assert record["brain_changed_pct"] == pytest.approx(100 * 100 / brain.sum())
    assert record["margin_changed_voxels"] == 140
    assert record["margin_changed_pct"] == pytest.approx(100 * 140 / margin.sum())
    assert record["brain_altered"] is True


def test_margin_mask_matches_a_full_dilation(ixi012):
    image, brain = ixi012
    zooms = image.header.get_zooms()
    assert np.array_equal(margin_mask(brain, zooms, 5.0), dilate_mm(brain, zooms, 5.0))


def test_quickshear_spares_the_brain_but_changes_the_face(ixi012):
    from quickshear import quickshear

    image, brain = ixi012
    ones = nib.Nifti1Image(np.ones(image.shape, dtype=np.uint8), image.affine)
    kept = np.asanyarray(quickshear(ones, nib.Nifti1Image(brain.astype(np.uint8), image.affine),
                                    buff=10).dataobj).astype(bool)
    data = np.asanyarray(image.dataobj)
    defaced = np.where(kept, data, 0)
    record = brain_preservation(changed_voxels(data, defaced), brain, image.header.get_zooms())
    assert record["changed_voxels"] > 10_000
    assert record["brain_changed_voxels"] == 0
    assert record["brain_altered"] is False
