"""Face removal measured on the head's outer skin, independently of every defacer's template.

Everything happens on a *world grid*: the image resampled to isotropic voxels whose axes are
the scanner's RAS axes, so that "anterior", "left" and "up" mean the same thing whatever the
stored voxel order, slice thickness or patient position (the affine of a BIDS image maps to the
patient's own RAS axes, also for a prone acquisition).

* The head is the largest connected region brighter than a fraction of the brain's median
  intensity, closed and with every cavity filled (:func:`head_mask`): its boundary is the outer
  skin only; sinuses, orbits and airways closed in any plane are not surfaces.
* The skin is summarised by three *depth maps* (:func:`skin_maps`): for every ray parallel to an
  axis, the coordinate (mm) of the outermost head voxel seen from the front (anterior), from the
  left and from the right. Rays whose first head voxel touches the edge of the field of view are
  not skin and are left out.
* The face is located on the original only (:func:`locate_face`), from the deepbet brain mask and
  the skin: the nose tip is the most anterior skin point in a midline band around the lower edge
  of the brain; the face, eyes, nose, mouth, chin and ears are regions placed relative to the nose
  tip and the brain's centre, scaled by the brain's anterior-posterior length ``L``.
* A skin point is *altered* when the defaced image's skin along the same ray is missing or more
  than ``tolerance_mm`` away from the original's (:func:`surface_change`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage

#: Spacing (mm) of the world grid on which the skin is measured and rendered.
GRID_MM = 1.5
#: The head is brighter than this fraction of the median intensity inside the brain mask.
HEAD_FRACTION = 0.15
#: A skin point moved by more than this (mm) along its ray, or gone, counts as altered.
TOLERANCE_MM = 3.0
#: Radius (mm) of the disc around the nose tip that decides "nose tip removed".
NOSE_TIP_RADIUS_MM = 4.0
#: Regions with a smaller original skin area than this (cm^2) give NaN.
MIN_AREA_CM2 = 1.0
#: The face is wholly in the field of view when this fraction of the chin box is.
LOWER_FACE_FOV = 0.5
#: Skin layer (mm under the skin) searched for a refacer's painted, saturated intensity.
PAINT_DEPTH_MM = 10.0

#: Face regions on the frontal depth map, relative to the nose tip, in units of L:
#: boxes (|dx| <= half width, dz_low <= dz <= dz_high) and the two eye discs.
FACE_BOX = (0.28, -0.42, 0.34)
NOSE_BOX = (0.09, -0.05, 0.20)
MOUTH_BOX = (0.16, -0.24, -0.07)
CHIN_BOX = (0.18, -0.42, -0.24)
EYE_CENTRE = (0.19, 0.22)
EYE_RADIUS = 0.09
#: Skin more than this (x L) behind the nose tip is neck or cheek side, not face.
FACE_DEPTH = 0.30
#: Ear box on the lateral depth maps: dy from the brain centre, dz from the nose tip (x L).
EAR_BOX = (-0.25, 0.02, -0.12, 0.28)
#: Within the ear box, the pinna is skin standing out this much (mm) over the head below it.
PINNA_MM = 4.0

REGIONS = ("face", "eyes", "nose", "mouth", "chin", "ears")


@dataclass(frozen=True)
class WorldGrid:
    """An isotropic grid aligned with the RAS axes; ``affine`` maps its indices to mm."""

    affine: np.ndarray
    shape: tuple[int, int, int]

    @property
    def spacing(self) -> float:
        return float(self.affine[0, 0])

    def coords(self, axis: int) -> np.ndarray:
        """World coordinate (mm) of every index along ``axis``."""
        return self.affine[axis, 3] + self.spacing * np.arange(self.shape[axis])


def world_grid(image: nib.Nifti1Image, spacing: float = GRID_MM) -> WorldGrid:
    """The RAS-aligned grid of ``spacing`` mm covering the image's field of view."""
    shape = np.array(image.shape[:3])
    corners = np.array(np.meshgrid(*[(-0.5, n - 0.5) for n in shape], indexing="ij"))
    corners = corners.reshape(3, -1).T
    world = nib.affines.apply_affine(image.affine, corners)
    low, high = world.min(0), world.max(0)
    size = tuple(int(v) for v in np.floor((high - low) / spacing) + 1)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = low + spacing / 2
    return WorldGrid(affine, size)


def to_world(grid: WorldGrid, image: nib.Nifti1Image, data: np.ndarray, order: int = 1
             ) -> np.ndarray:
    """Resample a 3D array on the image's grid onto the world grid (0 outside the image)."""
    from nibabel import orientations

    # reorder the voxel axes to the closest RAS first: then the mapping is often diagonal,
    # which scipy resamples several times faster than a general matrix
    ornt = orientations.io_orientation(image.affine)
    data = orientations.apply_orientation(np.asarray(data, dtype=np.float32), ornt)
    affine = image.affine @ orientations.inv_ornt_aff(ornt, image.shape[:3])
    matrix = np.linalg.inv(affine) @ grid.affine
    linear = matrix[:3, :3]
    if np.allclose(linear, np.diag(np.diag(linear)), atol=1e-6):
        linear = np.diag(linear)
    with warnings.catch_warnings():  # the 1-D matrix notice of SciPy 0.18 (same maths)
        warnings.filterwarnings("ignore", message="The behavior of affine_transform")
        return ndimage.affine_transform(
            np.ascontiguousarray(data), linear, matrix[:3, 3], output_shape=grid.shape,
            order=order, mode="constant", cval=0.0,
        )


def fov_mask(grid: WorldGrid, image: nib.Nifti1Image) -> np.ndarray:
    """World-grid voxels inside the image's field of view."""
    return to_world(grid, image, np.ones(image.shape[:3], dtype=np.float32), order=0) > 0.5


def _ball(radius: int) -> np.ndarray:
    grid = np.mgrid[tuple(slice(-radius, radius + 1) for _ in range(3))]
    return (grid**2).sum(0) <= radius * radius


def _in_plane(axis: int) -> np.ndarray:
    structure = np.zeros((3, 3, 3), dtype=bool)
    index = [slice(None)] * 3
    index[axis] = 1
    structure[tuple(index)] = ndimage.generate_binary_structure(2, 1)
    return structure


def head_threshold(data: np.ndarray, brain_mask: np.ndarray,
                   fraction: float = HEAD_FRACTION) -> float:
    """Intensity above which a voxel is head: ``fraction`` of the median inside the brain."""
    values = np.asarray(data)[brain_mask]
    values = values[np.isfinite(values)]
    return float(fraction * np.median(values)) if values.size else float("nan")


def head_mask(volume: np.ndarray, threshold: float) -> np.ndarray:
    """The head with its cavities filled, so that its boundary is the outer skin only.

    Voxels above ``threshold``, opened by a 1-voxel ball (noise, ghosts), largest connected
    component, closed by a 2-voxel ball, then every hole filled in 3D and in every plane.
    """
    head = np.asarray(volume) > threshold
    if not head.any():
        return head
    head = ndimage.binary_opening(head, _ball(1))
    labels, count = ndimage.label(head)
    if count == 0:
        return head
    sizes = np.bincount(labels.ravel())[1:]
    head = labels == (int(np.argmax(sizes)) + 1)
    pad = 3
    head = ndimage.binary_closing(np.pad(head, pad), _ball(2))[pad:-pad, pad:-pad, pad:-pad]
    head = ndimage.binary_fill_holes(head)
    for axis in range(3):
        head = ndimage.binary_fill_holes(head, _in_plane(axis))
    return head


@dataclass(frozen=True)
class SkinMaps:
    """Outermost skin coordinate (mm, outward positive) along rays seen from three sides.

    ``anterior[i, k]``: largest y of the head on the ray (x_i, z_k); ``left[j, k]``: largest -x
    on the ray (y_j, z_k); ``right[j, k]``: largest x. NaN where the ray misses the head or its
    first head voxel lies on the edge of the field of view.
    """

    anterior: np.ndarray
    left: np.ndarray
    right: np.ndarray


def _outermost(head: np.ndarray, fov: np.ndarray, axis: int, positive: bool,
               coords: np.ndarray) -> np.ndarray:
    head = np.moveaxis(head, axis, 0)
    fov = np.moveaxis(fov, axis, 0)
    if positive:
        head, fov, coords = head[::-1], fov[::-1], coords[::-1]
    hit = head.any(0)
    first = np.argmax(head, axis=0)
    # the voxel just outside the hit must be inside the field of view (else the skin is cut)
    outside = np.clip(first - 1, 0, None)
    cut = (first == 0) | ~np.take_along_axis(fov, outside[None], 0)[0]
    value = coords[first] if positive else -coords[first]
    return np.where(hit & ~cut, value, np.nan)


def skin_maps(head: np.ndarray, fov: np.ndarray, grid: WorldGrid) -> SkinMaps:
    """Depth maps of the outer skin seen from the front, the left and the right."""
    return SkinMaps(
        anterior=_outermost(head, fov, 1, True, grid.coords(1)),
        left=_outermost(head, fov, 0, False, grid.coords(0)),
        right=_outermost(head, fov, 0, True, grid.coords(0)),
    )


@dataclass(frozen=True)
class FaceGeometry:
    """Where the face is on the original, as masks on the skin maps and points in mm (RAS).

    ``front`` regions (face, eyes, nose, mouth, chin) are masks on ``SkinMaps.anterior``; ``ears``
    is a pair of masks on ``left`` and ``right``. ``nose_tip`` and ``brain_centre`` are in mm,
    ``length`` is the brain's anterior-posterior extent L (mm).
    """

    front: dict[str, np.ndarray]
    ears: tuple[np.ndarray, np.ndarray]
    nose_tip: tuple[float, float, float]
    nose_index: tuple[int, int]
    nose_disc: np.ndarray
    brain_centre: tuple[float, float, float]
    brain_low: float
    length: float
    regions_from: str = "brain-geometry"
    lower_box: np.ndarray | None = None


def _pinna(side: np.ndarray, box: np.ndarray, spacing: float) -> np.ndarray:
    """Skin inside ``box`` standing out of the head surface beneath it (grey opening)."""
    filled = np.where(np.isfinite(side), side, np.nanmin(side) if np.isfinite(side).any() else 0)
    radius = max(1, round(20.0 / spacing))
    yy, zz = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    disc = yy**2 + zz**2 <= radius**2
    base = ndimage.grey_opening(filled, footprint=disc)
    pinna = box & np.isfinite(side) & (filled - base > PINNA_MM)
    pinna = ndimage.binary_dilation(pinna, iterations=2) & box & np.isfinite(side)
    return pinna if pinna.sum() * spacing**2 >= MIN_AREA_CM2 * 100 else box & np.isfinite(side)


def locate_face(maps: SkinMaps, brain: np.ndarray, grid: WorldGrid) -> FaceGeometry | None:
    """Place the face regions on the original's skin maps; None without a brain or skin."""
    if not brain.any():
        return None
    points = nib.affines.apply_affine(grid.affine, np.argwhere(brain))
    low, high, centre = points.min(0), points.max(0), points.mean(0)
    length = float(high[1] - low[1])
    xs, ys, zs = grid.coords(0), grid.coords(1), grid.coords(2)
    front = maps.anterior
    dx0 = xs[:, None] - centre[0]
    band = (np.abs(dx0) <= 0.10 * length) & (zs[None, :] >= low[2] - 0.30 * length)
    band &= (zs[None, :] <= low[2] + 0.35 * length) & np.isfinite(front)
    if not band.any():
        return None
    ix, iz = np.unravel_index(np.argmax(np.where(band, front, -np.inf)), front.shape)
    tip = (float(xs[ix]), float(front[ix, iz]), float(zs[iz]))
    dx = (xs[:, None] - tip[0]) / length
    dz = (zs[None, :] - tip[2]) / length
    skin = np.isfinite(front) & (front >= tip[1] - FACE_DEPTH * length)

    def box(spec):
        half, bottom, top = spec
        return skin & (np.abs(dx) <= half) & (dz >= bottom) & (dz <= top)

    face = box(FACE_BOX)
    eyes = face & ((np.abs(dx) - EYE_CENTRE[0]) ** 2 + (dz - EYE_CENTRE[1]) ** 2
                   <= EYE_RADIUS**2)
    regions = {"face": face, "eyes": eyes, "nose": box(NOSE_BOX) & face,
               "mouth": box(MOUTH_BOX) & face, "chin": box(CHIN_BOX) & face}
    radius = NOSE_TIP_RADIUS_MM / length
    disc = face & (dx**2 + dz**2 <= radius**2)
    disc[ix, iz] = True
    dy = (ys[:, None] - centre[1]) / length
    dze = (zs[None, :] - tip[2]) / length
    y0, y1, z0, z1 = EAR_BOX
    ear_box = (dy >= y0) & (dy <= y1) & (dze >= z0) & (dze <= z1)
    ears = (_pinna(maps.left, ear_box, grid.spacing), _pinna(maps.right, ear_box, grid.spacing))
    return FaceGeometry(regions, ears, tip, (int(ix), int(iz)), disc,
                        tuple(float(v) for v in centre), float(low[2]), length)


def lower_face_in_fov(fov: np.ndarray, geometry: FaceGeometry | None, grid: WorldGrid) -> bool:
    """Whether the field of view reaches the chin: most of the chin box (seen from the front)
    has voxels of the field of view in front of the brain's centre.

    Axial slabs that stop at the nose (a FLAIR, a T2w) fail: a detector cannot see a face there.
    """
    if geometry is None:
        return False
    xs, ys, zs = grid.coords(0), grid.coords(1), grid.coords(2)
    front = fov[:, ys >= geometry.brain_centre[1], :].any(axis=1)
    if geometry.lower_box is not None:
        lower = geometry.lower_box
        return bool(lower.any() and front[lower].mean() >= LOWER_FACE_FOV)
    half, bottom, top = CHIN_BOX
    dx = (xs[:, None] - geometry.nose_tip[0]) / geometry.length
    dz = (zs[None, :] - geometry.nose_tip[2]) / geometry.length
    chin = (np.abs(dx) <= half) & (dz >= bottom) & (dz <= top)
    return bool(chin.any() and front[chin].mean() >= LOWER_FACE_FOV)


def painted_face_pct(volume: np.ndarray, maps: SkinMaps, geometry: FaceGeometry | None,
                     grid: WorldGrid, top: float) -> float:
    """Percent of the face whose first ``PAINT_DEPTH_MM`` under the skin reach ``top``.

    ``top`` is the image's maximum. Real tissue reaches it in a few voxels at most; a refacer
    that paints a generic face with one saturated intensity (AFNI's refacer output here) fills
    a large part of the face with it.
    """
    if geometry is None or not np.isfinite(top) or top <= 0:
        return float("nan")
    face = geometry.front["face"]
    ii, kk = np.nonzero(face)
    if ii.size == 0:
        return float("nan")
    y0, step = grid.coords(1)[0], grid.spacing
    skin = maps.anterior[ii, kk]
    present = np.isfinite(skin)  # a removed face has no skin here: not painted
    jj = np.round((np.where(present, skin, y0) - y0) / step).astype(int)
    reached = np.zeros(ii.size, dtype=bool)
    for offset in range(int(PAINT_DEPTH_MM / step) + 1):
        reached |= volume[ii, np.clip(jj - offset, 0, None), kk] >= 0.999 * top
    return float(100.0 * (reached & present).mean())


def altered_skin(before: np.ndarray, after: np.ndarray, tolerance: float = TOLERANCE_MM
                 ) -> np.ndarray:
    """Skin of the original map that is gone or moved by more than ``tolerance`` mm."""
    with np.errstate(invalid="ignore"):
        kept = np.isfinite(after) & (np.abs(after - before) <= tolerance)
    return np.isfinite(before) & ~kept


def _percent(altered: np.ndarray, region: np.ndarray, spacing: float) -> float:
    area = region.sum() * spacing**2
    if area < MIN_AREA_CM2 * 100:
        return float("nan")
    return float(100.0 * (altered & region).sum() / region.sum())


def surface_change(original: SkinMaps, defaced: SkinMaps, geometry: FaceGeometry | None,
                   spacing: float, tolerance: float = TOLERANCE_MM) -> dict[str, float | bool]:
    """Percent of each face region's skin altered, and whether the nose tip is gone.

    Keys: ``<region>_altered_pct`` for face, eyes, nose, mouth, chin, ears (NaN when the region
    has less than ``MIN_AREA_CM2`` of skin on the original), ``nose_tip_removed`` (more than half
    of the skin within ``NOSE_TIP_RADIUS_MM`` of the tip altered) and ``nose_tip_retreat_mm``
    (median backward move of that skin; a missing skin counts as the distance to the back of
    the map's range). NaN (and None) everywhere without a face geometry.
    """
    out: dict[str, float | bool | None] = {f"{r}_altered_pct": float("nan") for r in REGIONS}
    out.update(nose_tip_removed=None, nose_tip_retreat_mm=float("nan"),
               face_area_cm2=float("nan"))
    if geometry is None:
        return out
    front = altered_skin(original.anterior, defaced.anterior, tolerance)
    for name, region in geometry.front.items():
        out[f"{name}_altered_pct"] = _percent(front, region, spacing)
    left = altered_skin(original.left, defaced.left, tolerance)
    right = altered_skin(original.right, defaced.right, tolerance)
    ears_l, ears_r = geometry.ears
    area = ears_l.sum() + ears_r.sum()
    if area * spacing**2 >= MIN_AREA_CM2 * 100:
        out["ears_altered_pct"] = float(100.0 * ((left & ears_l).sum() + (right & ears_r).sum())
                                        / area)
    disc = geometry.nose_disc & np.isfinite(original.anterior)
    before = original.anterior[disc]
    floor = np.nanmin(original.anterior) - spacing
    after = np.where(np.isfinite(defaced.anterior[disc]), defaced.anterior[disc], floor)
    out["nose_tip_retreat_mm"] = float(np.median(before - after))
    out["nose_tip_removed"] = bool(front[disc].mean() > 0.5)
    out["face_area_cm2"] = float(geometry.front["face"].sum() * spacing**2 / 100)
    return out
