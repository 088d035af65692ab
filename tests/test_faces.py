"""dlib's CNN detector on skin renders of real heads: a face on originals, none where the
defacer removed it; the cameras, renders and landmarks map back onto the skin."""

from __future__ import annotations

from functools import cache

import nibabel as nib
import numpy as np
import pytest

from bidsapp.faces import detect, render, views
from bidsapp.metrics import face as F

pytestmark = pytest.mark.slow


@cache
def _head(path: str, brain_from: str | None = None):
    """Skin points and world grid of an image (head threshold from a deepbet brain mask)."""
    from bidsapp.anatomy.brainmask import deepbet_brain_mask

    image = nib.load(path)
    brain = deepbet_brain_mask(nib.load(brain_from or path))
    grid = F.world_grid(image)
    values = np.asarray(image.dataobj, dtype=np.float32)
    head = F.head_mask(F.to_world(grid, image, values), F.head_threshold(values, brain))
    return render.skin_points(head, grid.affine), grid


def test_view_grid_and_camera_round_trip():
    cams = views.cameras(np.array([[-70.0, 0, -60], [70, 90, 100]]))
    assert list(cams)[0] == "y+0p+0" and len(cams) == len(views.YAWS) * len(views.PITCHES)
    cam = cams["y-25p+15"]
    toward, right, up = cam.axes()
    assert np.allclose([toward @ right, toward @ up, right @ up], 0)
    point = np.array([[10.0, 80.0, 5.0]])
    col, row, depth = cam.project(point)
    assert np.allclose(cam.unproject(col, row, depth), point)


def test_face_found_on_an_original_and_its_landmarks_lie_on_the_face(ds_faces):
    points, grid = _head(str(ds_faces / "sub-ixi015" / "anat" / "sub-ixi015_T1w.nii.gz"))
    seen = detect.see_original(points, grid.spacing)
    found = [f for f in seen.faces.values() if f is not None]
    assert len(found) >= 0.8 * len(seen.faces)
    best = seen.best
    assert best.score > 0.8 and best.view in seen.cameras
    left, top, right, bottom = best.box
    cols, rows = best.landmarks.T
    assert np.all((cols > left) & (cols < right) & (rows > top) & (rows < bottom))
    # the two eyes are level, left and right of the nose base, which is below them
    eyes = best.landmarks[:4].reshape(2, 2, 2).mean(1)
    assert abs(eyes[0, 1] - eyes[1, 1]) < 0.1 * (right - left)
    assert min(eyes[:, 0]) < best.landmarks[4, 0] < max(eyes[:, 0])
    assert best.landmarks[4, 1] > eyes[:, 1].max()
    # pixels map back to skin points (mm): the nose base is in front of the eyes
    world = seen.renders[best.view].world(best.landmarks[:, 0], best.landmarks[:, 1])
    assert np.all(np.isfinite(world))
    assert world[4, 1] > world[:4, 1].mean() + 5
    descriptor = detect.embedding(seen.renders[best.view], best.box)
    assert descriptor.shape == (128,) and np.isfinite(descriptor).all()


def test_no_face_on_a_defaced_output_seen_with_the_original_cameras(testdata):
    pairs = testdata / "pairs"
    points, grid = _head(str(pairs / "ixi016_face_T1w.nii.gz"))
    original = detect.see_original(points, grid.spacing)
    assert original.best is not None and original.best.score > 0.5
    defaced, _ = _head(str(pairs / "ixi016_defaced_T1w.nii.gz"),
                       str(pairs / "ixi016_face_T1w.nii.gz"))
    seen = detect.see(defaced, grid.spacing, original.cameras)
    assert set(seen.renders) == set(original.renders)
    best = seen.best
    assert best is None or best.score < original.best.score - 0.3


@pytest.mark.parametrize("path", ["ds-faces/sub-ixi012/anat/sub-ixi012_T1w.nii.gz",
                                  "ds-more/sub-infant/anat/sub-infant_T1w.nii.gz"])
def test_regions_from_landmarks_on_an_adult_and_the_infant(testdata, path):
    """Eyes above the nose above the mouth above the chin, centred on the face, each a real
    skin area, placed from the landmarks (not brain proportions)."""
    from test_metrics_face import reference_of

    reference = reference_of(testdata / path)
    geometry = reference.geometry
    assert geometry.regions_from == "landmarks"
    zs, xs = reference.grid.coords(2), reference.grid.coords(0)
    height = {name: zs[np.nonzero(mask)[1]].mean() for name, mask in geometry.front.items()}
    assert height["eyes"] > height["nose"] > height["mouth"] > height["chin"]
    middle = xs[np.nonzero(geometry.front["nose"])[0]].mean()
    for name in ("eyes", "nose", "mouth", "chin"):
        assert geometry.front[name].sum() * reference.grid.spacing**2 >= 100, name
        centre = xs[np.nonzero(geometry.front[name])[0]].mean()
        assert abs(centre - middle) < 10, name
    # the nose tip is the most anterior point of the face
    assert geometry.nose_tip[1] >= np.nanmax(reference.skin.maps.anterior[geometry.front["face"]])
    assert reference.lower_face_in_fov
