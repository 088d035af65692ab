"""bidsapp's default defacer: a registered template cut in front of the face, brain-guarded.

Method (``docs/defacers_default.md``):

1. Register pydeface's mean head to the image (deterministic antspyx affine at 4 mm, started
   from the deepbet brain centroid, and at the scale its volume implies for a small (infant's)
   brain; :func:`bidsapp.anatomy.registration.register_template`) and check the result against
   the brain mask (:mod:`bidsapp.anatomy.headsize`).
2. Map every image voxel into the template's grid and remove it when it lies in front of the
   cut: a face plane leaning back 1 mm per 3 mm down (eyebrows, eyes, nose, lips), a deeper
   neck plane below the nose (chin to its tip, under the chin), both bent back at the sides.
   The cut is analytic, so it extends past the template's field of view: a nose or chin outside
   the template, or an image whose field of view ends at the nose, is covered.
3. Guard: no voxel within the run's guard margin (``GUARD_MM``, 5 mm, by default; exact
   Euclidean distance) of the deepbet brain mask is altered (``--brain-guard off``: no guard);
   the record holds the number of guarded voxels and the smallest distance between a removed
   voxel and the brain.
4. Options: ``ears`` also removes the outer ears (template boxes beside the head, guarded);
   ``reface`` fills the removed voxels with the smoothed template head, its intensities
   quantile-matched to the kept tissue next to the cut, instead of zeros.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from bidsapp.defacers.base import (
    Availability,
    DefaceOutput,
    Defacer,
    DefaceRequest,
    template_defacer_availability,
    template_registration,
)
from bidsapp.geometry import bounding_box, box_intersection

#: Default guard: no voxel closer than this (mm, Euclidean, voxel centres) to the deepbet brain
#: mask is altered. The run's ``--guard-margin-mm`` / ``--brain-guard`` replace it
#: (``DefaceRequest.guard_margin_mm``).
GUARD_MM = 5.0

# The cut, in pydeface template grid coordinates (i: right, j: anterior, k: superior; about 1 mm
# per voxel): voxels with j > plane_height(i, k) are removed. On the template the eye globes
# reach j=210 and k=112, the brow is near k=120, the frontal pole at j=207; the template's field
# of view ends at j=255 (nose tip cut) and k=0 (mouth).
#: Face plane: j = FACE_J0 + (k - FACE_K0) / FACE_STEEPNESS (leans back 1 mm per 3 mm down).
FACE_J0, FACE_K0, FACE_STEEPNESS = 200.0, 116.0, 3.0
#: Neck plane, the deeper of the two below the nose: j = NECK_J0 - NECK_SLOPE * max(NECK_K0 - k, 0).
NECK_J0, NECK_K0, NECK_SLOPE = 184.0, 60.0, 0.3
#: The cut bends back at the sides by WRAP_MM * min(((i - MID_I) / WRAP_HALF_WIDTH)^2, WRAP_CAP).
MID_I, WRAP_MM, WRAP_HALF_WIDTH, WRAP_CAP = 88.0, 25.0, 60.0, 1.0
#: Ears: |i - MID_I| > EAR_HALF_WIDTH, EAR_J[0] <= j <= EAR_J[1], EAR_K[0] <= k <= EAR_K[1].
EAR_HALF_WIDTH, EAR_J, EAR_K = 52.0, (40.0, 135.0), (30.0, 130.0)


def template_coordinates(vox_map: np.ndarray, shape, axis: int) -> np.ndarray:
    """One template grid coordinate (row ``axis`` of ``vox_map``) for every image voxel (float32)."""
    row = np.asarray(vox_map[axis], dtype=np.float64)
    grids = [np.arange(n, dtype=np.float64) * row[a] for a, n in enumerate(shape[:3])]
    out = (grids[0][:, None, None] + grids[1][None, :, None]).astype(np.float32)
    out = out + grids[2][None, None, :].astype(np.float32)
    return out + np.float32(row[3])


def plane_height(i: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Template j of the cut at (i, k): the deeper of the face and neck planes, bent back at the
    sides."""
    face = FACE_J0 + (k - FACE_K0) / FACE_STEEPNESS
    neck = NECK_J0 - NECK_SLOPE * np.maximum(NECK_K0 - k, 0)
    wrap = WRAP_MM * np.minimum(((i - MID_I) / WRAP_HALF_WIDTH) ** 2, WRAP_CAP)
    return np.maximum(face, neck) - wrap


def face_region(vox_map: np.ndarray, shape, chunk: int = 2_000_000) -> np.ndarray:
    """Boolean region in front of the cut (template j > :func:`plane_height`), on the image grid.

    Computed in slabs of about ``chunk`` voxels to bound memory.
    """
    shape = tuple(int(n) for n in shape[:3])
    region = np.zeros(shape, dtype=bool)
    step = max(1, chunk // max(1, shape[0] * shape[1]))
    for start in range(0, shape[2], step):
        stop = min(shape[2], start + step)
        sub = np.array(vox_map, dtype=np.float64)
        sub[:3, 3] = sub[:3, 3] + sub[:3, 2] * start
        sub_shape = (shape[0], shape[1], stop - start)
        i = template_coordinates(sub, sub_shape, 0)
        k = template_coordinates(sub, sub_shape, 2)
        height = plane_height(i, k)
        del i, k
        region[:, :, start:stop] = template_coordinates(sub, sub_shape, 1) > height
    return region


def ear_region(vox_map: np.ndarray, shape) -> np.ndarray:
    """Boolean outer-ear region on the image grid (lateral to the template's skull)."""
    i = template_coordinates(vox_map, shape, 0)
    lateral = np.abs(i - MID_I) > EAR_HALF_WIDTH
    del i
    j = template_coordinates(vox_map, shape, 1)
    lateral &= (j >= EAR_J[0]) & (j <= EAR_J[1])
    del j
    k = template_coordinates(vox_map, shape, 2)
    lateral &= (k >= EAR_K[0]) & (k <= EAR_K[1])
    return lateral


def brain_distance(
    brain: np.ndarray, zooms, region: np.ndarray, reach_mm: float
) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Distance (mm) to the brain mask, in the bounding box of ``region`` + reach, clipped to
    the brain's bounding box + reach.

    Exact up to ``reach_mm``: any brain voxel closer than that to a region voxel lies in the box;
    region voxels outside the box are farther than ``reach_mm`` from the brain. Returns the
    distances and the box (image slices).
    """
    zooms = np.asarray(zooms[:3], dtype=float)
    pad = np.ceil(reach_mm / zooms).astype(int) + 1
    box = bounding_box(region, pad)
    if box is None:
        raise ValueError("facecut: the region to measure from is empty")
    near = bounding_box(brain, pad)
    if near is not None:
        box = box_intersection(box, near)
    sub = brain[box]
    if not sub.any():
        return np.full(sub.shape, np.inf, dtype=np.float32), box
    dist = ndimage.distance_transform_edt(~sub, sampling=zooms).astype(np.float32)
    return dist, box


def _reface(
    image_data: np.ndarray, removed: np.ndarray, kept_band: np.ndarray, generic: np.ndarray
) -> np.ndarray:
    """Fill ``removed`` with ``generic`` intensities quantile-matched to the band's tissue."""
    out = image_data.astype(np.float32, copy=True)
    source = generic[kept_band]
    target = out[kept_band]
    tissue = target > 0
    if tissue.sum() < 50:
        out[removed] = 0
        return out
    quantiles = np.linspace(0, 100, 51)
    src_q = np.percentile(source[tissue], quantiles)
    dst_q = np.percentile(target[tissue], quantiles)
    src_q, unique = np.unique(src_q, return_index=True)
    dst_q = dst_q[unique]
    air = float(np.percentile(source[~tissue], 90)) if (~tissue).any() else 0.0
    values = np.interp(generic[removed], src_q, dst_q)
    values[generic[removed] <= air] = 0
    out[removed] = values
    return out


def _cast_like(values: np.ndarray, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


class FaceCut(Defacer):
    """Template face region (pydeface's head, antspyx affine), extended, brain-guarded."""

    name = "facecut"
    title = "facecut (bidsapp default)"
    summary = (
        "face, chin and (optionally) ears removed by a registered template region, "
        f"never within --guard-margin-mm ({GUARD_MM:g}) of the brain; newborn to adult; "
        "deterministic"
    )
    citation = (
        "Template face-mask defacing after Gulban OF, et al., pydeface; registration with "
        "ANTs/antspyx (Avants BB, et al.); brain mask deepbet (Fisch L, et al. 2024)."
    )
    license = "MIT (pydeface template); Apache-2.0 (antspyx)"
    needs_brain_mask = True
    guard_by_default = True
    uses_template_registration = True

    def availability(self) -> Availability:
        status = template_defacer_availability("mean_reg2mean.nii.gz")
        if not status.available:
            return status
        from bidsapp import __version__

        return Availability(True, version=f"bidsapp {__version__}")

    def deface(self, request: DefaceRequest) -> DefaceOutput:
        image = request.image
        shape = image.shape[:3]
        zooms = image.header.get_zooms()[:3]
        brain = request.brain_mask
        if brain is None:
            raise ValueError("facecut needs the deepbet brain mask (request.brain_mask)")
        brain = np.asarray(brain, dtype=bool)
        if brain.shape != shape or not brain.any():
            raise ValueError(f"brain mask of shape {brain.shape} is empty or does not fit {shape}")
        data = request.voxels()
        if data.ndim > 3:
            raise ValueError("facecut defaces 3D images")
        ears = bool(request.options.get("ears", False))
        reface = bool(request.options.get("reface", False))

        margin = request.guard_margin_mm
        reg, size = template_registration(request)
        vox_map = reg.voxel_map(np.asarray(image.affine, dtype=float))

        region = face_region(vox_map, shape)
        if ears:
            region |= ear_region(vox_map, shape)
        reach = (margin or 0.0) + 20.0
        dist, box = brain_distance(brain, zooms, region, reach)
        guard = np.zeros(shape, dtype=bool)
        if margin is not None:
            guard[box] = dist <= margin
        guarded = region & guard
        removed = region & ~guard
        n_removed = int(removed.sum())
        min_dist = float(dist[removed[box]].min()) if removed[box].any() else float("inf")

        parameters: dict[str, Any] = {
            **reg.parameters,
            **size.record(),
            "guard_mm": margin if margin is not None else "off",
            "guard_mask": "deepbet brain mask of the input",
            "guarded_voxels": int(guarded.sum()),
            "removed_voxels": n_removed,
            "min_distance_mm": round(min_dist, 2) if min_dist <= reach else f"> {reach:g}",
            "brain_voxels_removed": int((removed & brain).sum()),
            "face_plane": {"j0": FACE_J0, "k0": FACE_K0, "steepness": FACE_STEEPNESS},
            "neck_plane": {"j0": NECK_J0, "k0": NECK_K0, "slope": NECK_SLOPE},
            "wrap_mm": WRAP_MM,
            "ears": ears,
            "reface": reface,
        }
        if reface:
            generic = _generic_face(reg, shape, image.affine)
            near = brain_distance(removed, zooms, removed, 12.0)
            band = np.zeros(shape, dtype=bool)
            band[near[1]] = near[0] <= 10.0
            band &= ~removed & ~guard
            filled = _reface(data, removed, band, generic)
            out = _cast_like(filled, data.dtype)
            parameters["reface_source"] = "pydeface template, 2 mm blocks, Gaussian 1 voxel"
        else:
            out = data.copy()
            out[removed] = 0
        return DefaceOutput(
            data=out,
            parameters=parameters,
            notes=[_guard_note(margin, parameters)],
        )


def _guard_note(margin: float | None, parameters: dict[str, Any]) -> str:
    if margin is None:
        return (f"brain guard off (--brain-guard off): {parameters['brain_voxels_removed']} "
                "brain voxels removed")
    return (f"no voxel within {margin:g} mm of the deepbet brain mask was altered "
            f"({parameters['guarded_voxels']} face-region voxels kept by the guard)")


def _generic_face(reg, shape, affine) -> np.ndarray:
    """The template head, smoothed, on the image grid (0 outside the template's view)."""
    from bidsapp.anatomy.registration import block_downsample, pydeface_template

    template = pydeface_template()
    small, small_affine = block_downsample(template.data, template.affine, 2.0)
    small = ndimage.gaussian_filter(small, 1.0)
    vox = np.linalg.inv(small_affine) @ reg.image_to_template @ np.asarray(affine, dtype=float)
    return ndimage.affine_transform(
        small, vox[:3, :3], offset=vox[:3, 3], output_shape=tuple(shape), order=1,
        mode="constant", cval=0.0, output=np.float32,
    )  # fmt: skip
