"""facecut, the default defacer: real heads of ds-faces, brain untouched, face gone, reproducible."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bidsapp.defacers import facecut as fc
from bidsapp.defacers.base import DefaceRequest
from faces import available_defacer, brain_mask, check_defaced

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def defacer():
    return available_defacer(fc.FaceCut)


def _run(defacer, path, tmp_path_factory, options=None):
    image = nib.load(path)
    brain = brain_mask(image)
    request = DefaceRequest(
        image=image,
        image_path=path,
        work_dir=tmp_path_factory.mktemp("facecut"),
        brain_mask=brain,
        threads=2,
        options=options or {},
    )
    return image, defacer.deface(request), brain


def _check(image, output, brain, max_face_kept=0.25):
    check_defaced(image, output, brain, fc.GUARD_MM, max_face_kept)


def test_plane_height_on_template_landmarks():
    """The cut passes behind the template's eyes, nose, lips and chin, and ends at the forehead."""
    i = np.array([56.0, 88.0, 88.0, 88.0, 88.0])
    k = np.array([100.0, 80.0, 30.0, -30.0, 200.0])
    height = fc.plane_height(i, k)
    assert height[0] < 198  # eye globe centre (j=198) removed
    assert height[1] < 215 and height[2] < 200 and height[3] < 190  # nose, lips, chin
    assert height[4] > 225  # nothing removed near the vertex


def test_face_region_identity_map():
    """On the template's own grid the region holds the face and none of the brain's middle."""
    vox_map = np.eye(4)
    region = fc.face_region(vox_map, (176, 256, 256), chunk=500_000)
    assert region[88, 250, 80] and region[88, 230, 20]
    assert not region[88, 120, 120] and not region[88, 200, 160]


def test_facecut_xa30(defacer, ds_faces, tmp_path_factory):
    path = ds_faces / "sub-xa30" / "anat" / "sub-xa30_run-2_T1w.nii.gz"
    image, output, brain = _run(defacer, path, tmp_path_factory)
    _check(image, output, brain)
    assert output.parameters["itk_threads"] == 1
    assert output.parameters["guarded_voxels"] >= 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "relpath",
    [
        "sub-hfp/anat/sub-hfp_acq-fl2d_T1w.nii.gz",  # prone, 4.8 mm sagittal slices
        "sub-uber/anat/sub-uber_acq-se_T1w.nii.gz",  # 6 mm sagittal, oblique field of view
        "sub-uber/anat/sub-uber_FLAIR.nii.gz",  # axial slab
        "sub-ixi015/anat/sub-ixi015_T1w.nii.gz",  # PSR, 2 mm
        "sub-adi/anat/sub-adi_acq-memprage_T1w.nii.gz",  # PIR, child
        "sub-adi/anat/sub-adi_acq-fse_T2w.nii.gz",  # T2w, field of view ends at the nose
    ],
)
def test_facecut_orientations(defacer, ds_faces, tmp_path_factory, relpath):
    image, output, brain = _run(defacer, ds_faces / relpath, tmp_path_factory)
    _check(image, output, brain)


@pytest.mark.slow
def test_facecut_template(defacer, pydeface_template, tmp_path_factory):
    image, output, brain = _run(defacer, pydeface_template, tmp_path_factory)
    _check(image, output, brain)


@pytest.mark.slow
def test_ears_option_removes_more(defacer, ds_faces, tmp_path_factory):
    path = ds_faces / "sub-xa30" / "anat" / "sub-xa30_run-1_T1w.nii.gz"
    image, plain, brain = _run(defacer, path, tmp_path_factory)
    request = DefaceRequest(
        image=image,
        image_path=path,
        work_dir=tmp_path_factory.mktemp("ears"),
        brain_mask=brain,
        options={"ears": True},
    )
    ears = defacer.deface(request)
    _check(image, ears, brain)
    original = np.asanyarray(image.dataobj)
    assert ((ears.data != original) & (plain.data == original)).sum() > 1000
    assert ears.parameters["ears"] is True


@pytest.mark.slow
def test_reface_option(defacer, ds_faces, tmp_path_factory):
    path = ds_faces / "sub-xa30" / "anat" / "sub-xa30_run-2_T1w.nii.gz"
    image = nib.load(path)
    brain = brain_mask(image)
    request = DefaceRequest(
        image=image,
        image_path=path,
        work_dir=tmp_path_factory.mktemp("reface"),
        brain_mask=brain,
        options={"reface": True},
    )
    output = defacer.deface(request)
    original = np.asanyarray(image.dataobj)
    data = output.data
    assert data.dtype == original.dtype and data.shape == original.shape
    changed = data != original
    from bidsapp.anatomy.brainmask import dilate_mm

    assert not (changed & dilate_mm(brain, image.header.get_zooms(), fc.GUARD_MM)).any()
    filled = data[changed]
    assert (filled > 0).mean() > 0.3, "the generic face is empty"
    assert filled.max() <= original.max()


_CHILD = textwrap.dedent(
    """
    import hashlib, sys
    from pathlib import Path
    import nibabel as nib, numpy as np
    from bidsapp.anatomy.brainmask import deepbet_brain_mask
    from bidsapp.defacers.base import DefaceRequest
    from bidsapp.defacers.facecut import FaceCut
    image = nib.load(sys.argv[1])
    threads = int(sys.argv[2])
    brain = deepbet_brain_mask(image, threads=threads)
    request = DefaceRequest(image=image, image_path=Path(sys.argv[1]), work_dir=Path(sys.argv[3]),
                            brain_mask=brain, threads=threads)
    data = np.ascontiguousarray(FaceCut().deface(request).data)
    print(hashlib.md5(data.tobytes()).hexdigest())
    """
)


@pytest.mark.slow
def test_reproducible_across_runs_and_threads(defacer, ds_faces, tmp_path):
    """Fresh processes (as the runner's), ITK told to use 1 and 2 threads: identical voxels."""
    import os

    path = ds_faces / "sub-ixi012" / "anat" / "sub-ixi012_T1w.nii.gz"
    hashes = []
    for n, threads in enumerate((1, 2, 2)):
        env = dict(os.environ, ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=str(threads),
                   OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO))  # fmt: skip
        work = tmp_path / f"run{n}"
        work.mkdir()
        result = subprocess.run(
            [sys.executable, "-c", _CHILD, str(path), str(threads), str(work)],
            capture_output=True, text=True, env=env, check=True, cwd=REPO,
        )  # fmt: skip
        hashes.append(result.stdout.strip().splitlines()[-1])
    assert len(set(hashes)) == 1, hashes
    assert len(hashes[0]) == len(hashlib.md5().hexdigest())


def test_needs_brain_mask(defacer, pydeface_template, tmp_path):
    image = nib.load(pydeface_template)
    request = DefaceRequest(image=image, image_path=pydeface_template, work_dir=tmp_path)
    with pytest.raises(ValueError, match="brain mask"):
        defacer.deface(request)


def test_shared_registration_and_boxed_distances_change_nothing(defacer, ds_faces, tmp_path):
    """The registration saved once (the workflow's ``template_*`` node) gives facecut and
    facemask the same result as their own; the distance transforms in their boxes equal the
    whole-image ones wherever they are used."""
    from scipy import ndimage

    from bidsapp.anatomy.brainmask import dilate_mm
    from bidsapp.anatomy.headsize import save_checked_registration
    from bidsapp.defacers.facemask import FaceMask

    path = ds_faces / "sub-ixi012" / "anat" / "sub-ixi012_T1w.nii.gz"
    image = nib.load(path)
    brain = brain_mask(image)
    saved = tmp_path / "template_registration.json"
    save_checked_registration(saved, image, brain, seed=42, work_dir=tmp_path)
    for engine in (defacer, available_defacer(FaceMask)):
        own, shared = (engine.deface(DefaceRequest(image=image, image_path=path,
                                                   work_dir=tmp_path, brain_mask=brain,
                                                   registration=registration))
                       for registration in (None, saved))
        assert np.array_equal(own.data, shared.data) and own.parameters == shared.parameters

    zooms = image.header.get_zooms()[:3]
    full = ndimage.distance_transform_edt(~brain, sampling=zooms)
    region = np.zeros_like(brain)
    region[:, 80:, :40] = True
    dist, box = fc.brain_distance(brain, zooms, region, 25.0)
    inside = np.full(brain.shape, np.inf, dtype=np.float32)
    inside[box] = dist
    near = region & (full <= 25.0)
    assert near.any() and np.array_equal(inside[near], full[near].astype(np.float32))
    assert (inside[region & (full > 25.0)] > 25.0).all()
    changed = np.zeros_like(brain)
    changed[:, 90:, :30] = True
    assert np.array_equal(dilate_mm(brain, zooms, 5.0, within=changed) & changed,
                          (full <= 5.0) & changed)
    assert np.array_equal(dilate_mm(brain, zooms, 5.0), full <= 5.0)
