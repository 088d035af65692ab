"""Face removal on real heads: 0 for an original against itself, high for sheared faces, the nose
tip and the ears seen where they are, whatever the voxel order or patient position."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel import orientations
from scipy import ndimage

from bidsapp.anatomy.brainmask import deepbet_brain_mask
from bidsapp.metrics.defacing import defacing_metrics
from bidsapp.metrics.reference import OriginalReference
from bidsapp.metrics import face as F

REGIONS = [f"{r}_altered_pct" for r in F.REGIONS]


@cache
def _cached(path: str) -> OriginalReference:
    image = nib.load(path)
    return OriginalReference.build(image, deepbet_brain_mask(image))


def reference_of(path) -> OriginalReference:
    """An original's reference (deepbet mask, skin, renders), built once per test session and
    shared by the metrics test modules."""
    return _cached(str(Path(path).resolve()))


def _quickshear(image, brain):
    from quickshear import quickshear

    ones = nib.Nifti1Image(np.ones(image.shape[:3], dtype=np.uint8), image.affine)
    mask = nib.Nifti1Image(brain.astype(np.uint8), image.affine)
    kept = np.asanyarray(quickshear(ones, mask, buff=10).dataobj).astype(bool)
    data = np.asanyarray(image.dataobj)
    return nib.Nifti1Image(np.where(kept, data, 0).astype(data.dtype), image.affine)


def _world(image):
    """World (RAS, mm) coordinates of every voxel of the image, shape + (3,)."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in image.shape[:3]], indexing="ij"), -1)
    return nib.affines.apply_affine(image.affine, index)


@pytest.fixture(scope="module")
def ixi012(ds_faces):
    return reference_of(ds_faces / "sub-ixi012" / "anat" / "sub-ixi012_T1w.nii.gz")


@pytest.fixture(scope="module")
def ixi012_sheared(ixi012):
    return _quickshear(ixi012.image, ixi012.brain_mask)


def test_skin_maps_of_a_box_head():
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    image = nib.Nifti1Image(np.zeros((40, 40, 40), dtype=np.float32), affine)
    grid = F.world_grid(image, 2.0)
    head = np.zeros(grid.shape, dtype=bool)
    head[10:30, 5:25, 8:35] = True
    maps = F.skin_maps(head, F.fov_mask(grid, image), grid)
    ys, xs = grid.coords(1), grid.coords(0)
    assert np.nanmax(maps.anterior) == pytest.approx(ys[24])
    assert np.nanmax(maps.right) == pytest.approx(xs[29])
    assert np.nanmax(maps.left) == pytest.approx(-xs[10])
    assert np.isnan(maps.anterior[0, 0])


def test_original_against_itself_is_zero(ixi012):
    record = defacing_metrics(ixi012, ixi012.image, downstream=False, render=False)
    for key in REGIONS:
        assert record[key] == 0.0, key
    assert record["nose_tip_removed"] is False
    assert record["nose_tip_retreat_mm"] == 0.0


def test_face_regions_sit_in_front_of_and_below_the_brain(ixi012):
    geometry = ixi012.geometry
    tip, centre, length = geometry.nose_tip, geometry.brain_centre, geometry.length
    assert 150 < length < 200  # brain length L (mm) of an adult
    assert tip[1] - centre[1] > 0.4 * length  # the nose is the front of the head
    assert tip[2] < centre[2]
    assert abs(tip[0] - centre[0]) < 0.1 * length
    for name in ("face", "eyes", "nose", "mouth", "chin"):
        assert geometry.front[name].sum() * F.GRID_MM**2 > 500, name  # > 5 cm^2 of skin
    assert all(ear.sum() > 0 for ear in geometry.ears)


def test_quickshear_removes_most_of_the_face(ixi012, ixi012_sheared):
    record = defacing_metrics(ixi012, ixi012_sheared, downstream=False, render=False)
    assert record["face_altered_pct"] > 70
    assert record["nose_altered_pct"] > 90
    assert record["mouth_altered_pct"] > 90 and record["chin_altered_pct"] > 90
    assert record["nose_tip_removed"] is True
    assert record["nose_tip_retreat_mm"] > 10
    assert record["ears_altered_pct"] < 5
    assert record["brain_changed_voxels"] == 0


def test_a_nose_tip_left_in_place_is_seen(ixi012, ixi012_sheared):
    tip = np.array(ixi012.geometry.nose_tip)
    world = _world(ixi012.image)
    # the nose, from its tip back 60 mm, so that what is put back stays joined to the head
    near = np.hypot(world[..., 0] - tip[0], world[..., 2] - tip[2]) < 15.0
    near &= (world[..., 1] <= tip[1] + 5) & (world[..., 1] >= tip[1] - 60)
    data = np.asanyarray(ixi012_sheared.dataobj).copy()
    data[near] = np.asanyarray(ixi012.image.dataobj)[near]
    left = nib.Nifti1Image(data, ixi012.image.affine)
    sheared = defacing_metrics(ixi012, ixi012_sheared, downstream=False, render=False)
    record = defacing_metrics(ixi012, left, downstream=False, render=False)
    assert record["nose_tip_removed"] is False
    assert record["nose_tip_retreat_mm"] == 0.0
    assert 50 < record["face_altered_pct"] < sheared["face_altered_pct"]
    assert record["nose_altered_pct"] < sheared["nose_altered_pct"]


def test_removed_ears_are_measured_apart_from_the_face(ixi012):
    image, grid, maps = ixi012.image, ixi012.grid, ixi012.skin.maps
    world = _world(image)
    index = np.round((world - grid.affine[:3, 3]) / grid.spacing).astype(int)
    j = np.clip(index[..., 1], 0, grid.shape[1] - 1)
    k = np.clip(index[..., 2], 0, grid.shape[2] - 1)
    # the pinna and a few mm around it, down to 15 mm under its outer skin
    ear_left, ear_right = (ndimage.binary_dilation(ear, iterations=3)
                           for ear in ixi012.geometry.ears)
    cut = (ear_right[j, k] & (world[..., 0] > maps.right[j, k] - 15.0))
    cut |= (ear_left[j, k] & (-world[..., 0] > maps.left[j, k] - 15.0))
    cut &= ~ixi012.margin_mask
    data = np.asanyarray(image.dataobj).copy()
    data[cut] = 0
    record = defacing_metrics(ixi012, nib.Nifti1Image(data, image.affine), downstream=False,
                              render=False)
    assert record["ears_altered_pct"] > 80
    assert record["face_altered_pct"] < 5
    assert record["brain_changed_voxels"] == 0


def test_a_lower_face_cut_away_with_its_slices_is_all_gone(ixi012):
    """Whole axial slabs below the mouth emptied: the rays there meet no skin at all."""
    world = _world(ixi012.image)
    data = np.asanyarray(ixi012.image.dataobj).copy()
    data[world[..., 2] < ixi012.geometry.nose_tip[2] - 20.0] = 0
    record = defacing_metrics(ixi012, nib.Nifti1Image(data, ixi012.image.affine),
                              downstream=False)
    assert record["chin_altered_pct"] == 100.0
    assert record["mouth_altered_pct"] > 50
    assert record["eyes_altered_pct"] == 0.0
    assert record["nose_tip_removed"] is False
    assert record["painted_face_pct"] == 0.0


def test_pair_ixi016_face_against_defaced(testdata):
    reference = reference_of(testdata / "pairs" / "ixi016_face_T1w.nii.gz")
    same = defacing_metrics(reference, reference.image, downstream=False, render=False)
    assert same["face_altered_pct"] == 0.0
    defaced = nib.load(testdata / "pairs" / "ixi016_defaced_T1w.nii.gz")
    record = defacing_metrics(reference, defaced, downstream=False, render=False)
    # this defacer keeps the eyes and the top of the nose, and removes the rest
    assert record["face_altered_pct"] > 50
    assert record["mouth_altered_pct"] > 90 and record["chin_altered_pct"] > 90
    assert record["nose_tip_removed"] is True
    # it also rescaled the intensities: every brain voxel changed value
    assert record["brain_altered"] is True


def test_voxel_order_does_not_matter(ixi012, ixi012_sheared):
    image = ixi012.image
    ornt = np.array([[2, -1], [0, 1], [1, -1]])  # PSR stored as another order, two flips

    def reorder(img, data=None):
        data = np.asanyarray(img.dataobj) if data is None else data
        affine = img.affine @ orientations.inv_ornt_aff(ornt, img.shape[:3])
        return nib.Nifti1Image(orientations.apply_orientation(data, ornt), affine)

    brain = orientations.apply_orientation(ixi012.brain_mask, ornt)
    other = OriginalReference.build(reorder(image), brain)  # renders: regions from landmarks
    assert nib.aff2axcodes(other.image.affine) != nib.aff2axcodes(image.affine)
    assert np.allclose(other.geometry.nose_tip, ixi012.geometry.nose_tip, atol=1e-3)
    first = defacing_metrics(ixi012, ixi012_sheared, downstream=False, render=False)
    second = defacing_metrics(other, reorder(ixi012_sheared), downstream=False, render=False)
    for key in REGIONS:
        assert second[key] == pytest.approx(first[key], abs=0.5), key


def test_prone_thick_slice_head_has_its_face_in_front(ds_faces):
    """sub-hfp: prone, 4.8 mm sagittal slices; the affine puts the face in front all the same."""
    reference = reference_of(ds_faces / "sub-hfp" / "anat" / "sub-hfp_acq-fl2d_T1w.nii.gz")
    geometry = reference.geometry
    assert geometry.nose_tip[1] - geometry.brain_centre[1] > 0.4 * geometry.length
    assert geometry.nose_tip[2] < geometry.brain_centre[2]
    assert F.lower_face_in_fov(reference.fov, geometry, reference.grid)


@pytest.mark.slow
def test_defacers_in_a_sensible_order_on_the_template(pydeface_template, tmp_path):
    """On the 1 mm template: quickshear and facemask remove the nose tip, deepdefacer leaves it,
    and removes less of the face."""
    from bidsapp.defacers.base import DefaceRequest
    from bidsapp.defacers.deepdefacer import DeepDefacer
    from bidsapp.defacers.facemask import FaceMask

    template = nib.load(pydeface_template)
    reference = OriginalReference.build(template, deepbet_brain_mask(template), render=False)
    records = {"quickshear": defacing_metrics(
        reference, _quickshear(template, reference.brain_mask), downstream=False, render=False)}
    for defacer in (DeepDefacer(), FaceMask()):
        if not defacer.availability().available:
            pytest.skip(f"{defacer.name}: {defacer.availability().reason}")
        (tmp_path / defacer.name).mkdir()
        output = defacer.deface(DefaceRequest(
            image=template, image_path=pydeface_template, work_dir=tmp_path / defacer.name,
            brain_mask=reference.brain_mask))
        defaced = nib.Nifti1Image(output.data, template.affine)
        records[defacer.name] = defacing_metrics(reference, defaced, downstream=False,
                                                 render=False)
    assert records["quickshear"]["nose_tip_removed"] is True
    assert records["facemask"]["nose_tip_removed"] is True
    assert records["deepdefacer"]["nose_tip_removed"] is False
    assert records["deepdefacer"]["face_altered_pct"] < records["facemask"]["face_altered_pct"]
    assert records["facemask"]["face_altered_pct"] <= records["quickshear"]["face_altered_pct"]
    assert records["deepdefacer"]["face_altered_pct"] > 40
