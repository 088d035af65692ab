"""Figures of the reports, as pure functions that write PNG files (matplotlib's Agg backend).

* :func:`plot_mosaic`: sagittal and axial slices of a (defaced) image with the altered voxels
  (red), altered brain voxels (magenta) and the brain mask's contour (cyan) overlaid.
* :func:`head_mesh` and :func:`plot_renders`: a 3D render of the head's outer skin from the
  front, at 45 degrees and from the side. The mesh and the renderer are those of
  :mod:`bidsapp.metrics.render` (the face-detection renders), so a reader sees what the detector
  saw; they work on a world (RAS) grid, so the face points at the camera whatever the voxel order.
* :func:`plot_distributions`: one strip-and-box panel per metric, one column per defacer.

Every function is deterministic and reads nothing but its arguments.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from bidsapp.io import atomic_write_bytes

#: Render views: name -> azimuth of the camera (degrees, from the front towards the subject's
#: right).
VIEWS = {"front": 0.0, "oblique": 45.0, "side": 90.0}
#: Pixel size of one rendered view (square).
RENDER_SIZE = 256
#: Sagittal cuts, in mm from the brain's centre (negative: the subject's left).
SAGITTAL_OFFSETS_MM = (-32.0, -16.0, 0.0, 16.0, 32.0)
#: How far the head reaches beyond the brain's bounding box (mm): left, right, posterior,
#: anterior (nose), inferior (chin), superior.
HEAD_AROUND_BRAIN_MM = (20.0, 20.0, 18.0, 40.0, 80.0, 24.0)
#: Overlay colours.
ALTERED_RGBA = (1.0, 0.15, 0.1, 0.45)
ALTERED_BRAIN_RGBA = (1.0, 0.0, 1.0, 1.0)
BRAIN_CONTOUR = "#00e5ff"


def _figure(width_in: float, height_in: float, facecolor: str = "black"):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), facecolor=facecolor)
    FigureCanvasAgg(fig)
    return fig


def _load(value, reference: nib.Nifti1Image | None = None) -> nib.Nifti1Image | None:
    """An image from a path, an image, or an array on ``reference``'s grid (None stays None)."""
    if value is None:
        return None
    if isinstance(value, (str, Path)):
        return nib.load(str(value))
    if isinstance(value, np.ndarray):
        if reference is None:
            raise ValueError("an array needs a reference image for its grid")
        if value.shape[:3] != reference.shape[:3]:
            raise ValueError(f"mask shape {value.shape} differs from the image's "
                             f"{reference.shape[:3]}")
        return nib.Nifti1Image(value.astype(np.uint8), reference.affine)
    return value


def _canonical(image: nib.Nifti1Image, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Voxel data in the closest RAS voxel order, and its voxel sizes (mm)."""
    canon = nib.as_closest_canonical(nib.Nifti1Image(
        np.asanyarray(image.dataobj).reshape(image.shape[:3]), image.affine))
    return np.asarray(canon.dataobj, dtype=dtype), np.array(canon.header.get_zooms()[:3], float)


def _head(data: np.ndarray) -> np.ndarray:
    """A rough head mask for framing: voxels above 10% of the 99th percentile."""
    positive = data[data > 0]
    if positive.size == 0:
        return np.zeros(data.shape, dtype=bool)
    return data > 0.1 * np.percentile(positive, 99)


def _bounds(mask: np.ndarray, axis: int, size: int) -> tuple[int, int]:
    other = tuple(a for a in range(3) if a != axis)
    hit = np.flatnonzero(mask.any(axis=other))
    return (int(hit[0]), int(hit[-1]) + 1) if hit.size else (0, size)


def mosaic_cuts(data: np.ndarray, brain: np.ndarray | None, zooms: np.ndarray,
                n_axial: int = 5) -> tuple[list[int], list[int]]:
    """Sagittal (x) and axial (z) voxel indices of the mosaic's cuts, on RAS-ordered data.

    Sagittal cuts sit at :data:`SAGITTAL_OFFSETS_MM` from the brain's centre; axial cuts run from
    10 mm below the brain's lowest point (mouth, nose) to 20 mm above its centre, within the head.
    """
    head = _head(data)
    region = brain if brain is not None and brain.any() else head
    if not region.any():
        region = np.ones(data.shape, dtype=bool)
    centre = np.argwhere(region).mean(0)
    nx, _, nz = data.shape
    sagittal = sorted({int(np.clip(round(centre[0] + off / zooms[0]), 0, nx - 1))
                       for off in SAGITTAL_OFFSETS_MM})
    z_region = _bounds(region, 2, nz)
    z_head = _bounds(head, 2, nz) if head.any() else (0, nz)
    low = max(z_head[0], z_region[0] - round(10.0 / zooms[2]))
    high = min(nz - 1, round(float(centre[2]) + 20.0 / zooms[2]))
    if high <= low:
        low, high = 0, nz - 1
    axial = sorted({int(v) for v in np.linspace(low, high, n_axial).round()})
    return sagittal, axial


def plot_mosaic(image, altered_mask, brain_mask, out_file, *, n_axial: int = 5,
                panel_in: float = 2.0, dpi: int = 100) -> Path:
    """Sagittal (top row) and axial (bottom row) cuts of ``image`` with overlays; write a PNG.

    ``image`` is a path or a nibabel image; ``altered_mask`` and ``brain_mask`` are paths, images
    or arrays on ``image``'s grid, or None. Altered voxels are red, altered voxels inside the
    brain magenta, the brain's outline cyan. Cuts are displayed in RAS order (anterior to the
    right on sagittal cuts, the subject's left on the left and anterior up on axial cuts) with
    true voxel proportions, cropped to the head.
    """
    image = _load(image)
    data, zooms = _canonical(image)
    altered_img = _load(altered_mask, image)
    brain_img = _load(brain_mask, image)
    altered = _canonical(altered_img)[0] > 0.5 if altered_img is not None else None
    brain = _canonical(brain_img)[0] > 0.5 if brain_img is not None else None
    sagittal, axial = mosaic_cuts(data, brain, zooms, n_axial)
    head = _head(data)
    if altered is not None:
        head |= altered
    if not head.any():
        head = np.ones(data.shape, dtype=bool)
    box = [_bounds(head, axis, data.shape[axis]) for axis in range(3)]
    box = [(max(0, lo - 2), min(n, hi + 2)) for (lo, hi), n in zip(box, data.shape)]
    positive = data[head & (data > 0)]
    vmax = float(np.percentile(positive, 99.5)) if positive.size else 1.0
    vmin = min(0.0, float(np.percentile(data, 0.5)))  # background black, not the scalp
    if vmax <= vmin:
        vmax = vmin + 1.0

    columns = max(len(sagittal), len(axial))
    fig = _figure(panel_in * columns, panel_in * 2 + 0.3)
    grid = fig.add_gridspec(2, columns, left=0, right=1, top=1, bottom=0.3 / (panel_in * 2 + 0.3),
                            wspace=0.02, hspace=0.02)
    cuts = [("x", sagittal), ("z", axial)]
    centre_mm = (np.argwhere(brain).mean(0) if brain is not None and brain.any()
                 else np.array(data.shape) / 2) * zooms
    for row, (axis_name, indices) in enumerate(cuts):
        axis = 0 if axis_name == "x" else 2
        for col in range(columns):
            ax = fig.add_subplot(grid[row, col])
            ax.set_facecolor("black")
            ax.set_axis_off()
            if col >= len(indices):
                continue
            index = indices[col]
            _draw_cut(ax, axis, index, data, altered, brain, zooms, box, (vmin, vmax))
            offset = index * zooms[axis] - centre_mm[axis]
            ax.text(0.03, 0.97, f"{axis_name}={offset:+.0f} mm", color="white", fontsize=7,
                    va="top", ha="left", transform=ax.transAxes)
    fig.text(0.01, 0.02, "red: altered voxels   magenta: altered brain voxels   "
             "cyan: brain mask outline   (x, z: mm from the brain's centre)",
             color="white", fontsize=7, va="bottom")
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_file, dpi=dpi, facecolor="black")
    return out_file


def _draw_cut(ax, axis, index, data, altered, brain, zooms, box, window) -> None:
    """One cut: the grey image, the overlays and the brain outline, in mm."""
    (x0, x1), (y0, y1), (z0, z1) = box
    if axis == 0:  # sagittal: rows z, columns y (anterior right)
        take = (index, slice(y0, y1), slice(z0, z1))
        extent = (y0 * zooms[1], y1 * zooms[1], z0 * zooms[2], z1 * zooms[2])
    else:  # axial: rows y, columns x (subject's left on the left: RAS display)
        take = (slice(x0, x1), slice(y0, y1), index)
        extent = (x0 * zooms[0], x1 * zooms[0], y0 * zooms[1], y1 * zooms[1])
    grey = data[take].T
    kwargs = {"origin": "lower", "extent": extent, "interpolation": "nearest",
              "aspect": "equal"}
    ax.imshow(grey, cmap="gray", vmin=window[0], vmax=window[1], **kwargs)
    if altered is not None:
        cut = altered[take].T
        overlay = np.zeros(cut.shape + (4,), dtype=float)
        overlay[cut] = ALTERED_RGBA
        if brain is not None:
            overlay[cut & brain[take].T] = ALTERED_BRAIN_RGBA
        ax.imshow(overlay, **kwargs)
    if brain is not None:
        cut = brain[take].T.astype(float)
        if 0 < cut.sum() < cut.size:
            ax.contour(cut, levels=[0.5], colors=BRAIN_CONTOUR, linewidths=0.7,
                       origin="lower", extent=extent)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])


# --- 3D renders -------------------------------------------------------------------------------

def head_mesh(image, brain_mask=None):
    """The outer-skin mesh (world mm, RAS) of ``image``'s head, as the face metrics see it.

    The head mask is :func:`bidsapp.metrics.face.head_mask` on the RAS world grid, thresholded
    as the metrics threshold it (a fraction of the median intensity in the brain mask, on the
    stored voxels), or at a tenth of the 99th percentile without a brain mask.
    """
    from bidsapp.metrics import face, render
    from bidsapp.metrics.reference import finite_float32, first_volume

    image = _load(image)
    grid = face.world_grid(image)
    data = finite_float32(first_volume(image))
    world = face.to_world(grid, image, data)
    brain_img = _load(brain_mask, image)
    threshold = float("nan")
    if brain_img is not None:
        brain = np.asanyarray(brain_img.dataobj).reshape(data.shape) > 0
        threshold = face.head_threshold(data, brain)
    if not np.isfinite(threshold):
        positive = world[world > 0]
        threshold = 0.1 * float(np.percentile(positive, 99)) if positive.size else 0.5
    head = face.head_mask(world, threshold)
    return render.skin_mesh(head, grid.affine)


def brain_cameras(brain_mask, views: dict[str, float] = VIEWS) -> dict:
    """One camera per view framing the head expected around a brain mask (path or image).

    The head is modelled as the ellipsoid in the brain's world bounding box widened by
    :data:`HEAD_AROUND_BRAIN_MM` (skull, nose, chin), so every defacer's render of one image
    shares one scale and framing, whatever it removed.
    """
    from bidsapp.metrics import render

    brain_img = _load(brain_mask)
    mask = np.asanyarray(brain_img.dataobj).reshape(brain_img.shape[:3]) > 0
    if not mask.any():
        raise ValueError("the brain mask is empty")
    points = nib.affines.apply_affine(brain_img.affine, np.argwhere(mask)[::7])
    low, high = points.min(0), points.max(0)
    grow = np.array(HEAD_AROUND_BRAIN_MM, dtype=float)  # (-x, +x, -y, +y, -z, +z)
    low = low - grow[0::2]
    high = high + grow[1::2]
    centre, semi = (low + high) / 2, (high - low) / 2
    out = {}
    for name, azimuth in views.items():
        camera = render.Camera(azimuth, (0.0, 0.0), 1.0)
        _, right, up = camera.axes()
        extent = max(np.sqrt(((semi * right) ** 2).sum()), np.sqrt(((semi * up) ** 2).sum()))
        out[name] = render.Camera(azimuth, (float(centre @ right), float(centre @ up)),
                                  float(1.04 * extent))
    return out


def cameras(meshes: Sequence, views: dict[str, float] = VIEWS) -> dict:
    """One camera per view that fits every mesh in ``meshes`` (same scale for all of them)."""
    from bidsapp.metrics import render

    points = [m.vertices for m in meshes if len(m.vertices)]
    union = render.Mesh(np.concatenate(points) if points else np.zeros((0, 3)),
                        np.zeros((0, 3), dtype=np.int64))
    return {name: render.frame(union, azimuth) for name, azimuth in views.items()}


def render_views(mesh, views: dict[str, float] = VIEWS, *, camera_by_view: dict | None = None,
                 size: int = RENDER_SIZE) -> dict[str, np.ndarray]:
    """Grey renders (uint8, ``size`` square) of ``mesh`` for each view."""
    from bidsapp.metrics import render

    camera_by_view = camera_by_view or cameras([mesh], views)
    return {name: render.render(mesh, camera_by_view[name], size) for name in views}


def plot_renders(mesh, out_file, *, views: dict[str, float] = VIEWS,
                 camera_by_view: dict | None = None, size: int = RENDER_SIZE) -> Path:
    """Write the renders of ``mesh`` side by side (front, 45 degrees, side) as one PNG."""
    from matplotlib.image import imsave

    images = render_views(mesh, views, camera_by_view=camera_by_view, size=size)
    gap = np.zeros((size, 4), dtype=np.uint8)
    pieces = []
    for name in views:
        pieces += [images[name], gap]
    strip = np.concatenate(pieces[:-1], axis=1)
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    imsave(out_file, strip, cmap="gray", vmin=0, vmax=255)
    return out_file


# --- group figures ----------------------------------------------------------------------------

def plot_distributions(table, metrics: dict[str, str], out_file=None, *, by: str = "defacer",
                       columns: int = 3, fmt: str = "png", dpi: int = 90) -> bytes:
    """Strip-and-box plots of ``metrics`` (column -> axis label) per ``by`` group.

    ``table`` is a pandas DataFrame; non-numeric or empty metrics are skipped. Returns the image
    bytes (and writes them to ``out_file`` when given). Points are jittered deterministically.
    """
    import pandas as pd

    groups = list(dict.fromkeys(table[by].astype(str))) if len(table) else []
    shown = []
    for column, label in metrics.items():
        if column in table:
            values = pd.to_numeric(table[column], errors="coerce")
            if values.notna().any():
                shown.append((column, label, values))
    panels = max(1, len(shown))
    ncols = min(columns, panels)
    nrows = int(np.ceil(panels / ncols))
    width = max(2.6, 0.55 * len(groups) + 1.2)  # inches per panel
    label_in = 0.045 * max([len(g) for g in groups] + [4]) + 0.35  # rotated tick labels
    height = 1.9 + label_in + 0.35
    fig = _figure(width * ncols, height * nrows, facecolor="white")
    # fixed margins (no tight_layout: it draws the figure once more)
    fig.subplots_adjust(left=0.6 / (width * ncols), right=1 - 0.1 / (width * ncols),
                        top=1 - 0.3 / (height * nrows), bottom=label_in / (height * nrows),
                        wspace=0.7 / (width - 0.7), hspace=(label_in + 0.35) / 1.9)
    rng = np.random.default_rng(0)
    if not shown:
        fig.text(0.5, 0.5, "no numeric metric to plot", ha="center", va="center")
    for i, (column, label, values) in enumerate(shown):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        data = [values[table[by].astype(str) == g].dropna().to_numpy(float) for g in groups]
        positions = np.arange(len(groups))
        kept = [(p, d) for p, d in zip(positions, data) if d.size]
        if kept:
            ax.boxplot([d for _, d in kept], positions=[p for p, _ in kept], widths=0.5,
                       showfliers=False, medianprops={"color": "#d62728"})
        for p, d in kept:
            jitter = rng.uniform(-0.15, 0.15, d.size)
            ax.plot(p + jitter, d, "o", ms=3, alpha=0.55, color="#1f77b4", mec="none")
        ax.set_xticks(positions)
        ax.set_xticklabels(groups, rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_title(label, fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=dpi)
    payload = buffer.getvalue()
    if out_file is not None:
        atomic_write_bytes(Path(out_file), payload)
    return payload


# --- the face detector's view -----------------------------------------------------------------

#: The detector's renders are this many times enlarged in the report (nearest neighbour).
DETECTION_ZOOM = 2


def plot_detection(image: np.ndarray, box, out_file, *, zoom: int = DETECTION_ZOOM) -> Path:
    """Write a detector render (grey, uint8) with the detector's ``box`` (left, top, right,
    bottom, pixels of that render) drawn in red, enlarged ``zoom`` times, as a PNG."""
    from matplotlib.image import imsave

    grey = np.repeat(np.repeat(np.asarray(image, dtype=np.uint8), zoom, 0), zoom, 1)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    height, width = grey.shape
    left, top, right, bottom = (int(round(v * zoom)) for v in box)
    left, right = np.clip([left, right], 0, width - 1)
    top, bottom = np.clip([top, bottom], 0, height - 1)
    red = np.array([255, 40, 40], dtype=np.uint8)
    for t in range(2):  # a 2-pixel outline, inside the image
        rgb[np.clip(top + t, 0, height - 1), left:right + 1] = red
        rgb[np.clip(bottom - t, 0, height - 1), left:right + 1] = red
        rgb[top:bottom + 1, np.clip(left + t, 0, width - 1)] = red
        rgb[top:bottom + 1, np.clip(right - t, 0, width - 1)] = red
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    imsave(out_file, rgb)
    return out_file
