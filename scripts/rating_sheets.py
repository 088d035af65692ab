"""Contact sheets for rating defacing results by eye (the visual ratings in tests/data).

For every original anatomical image of ``bids_dir`` and every defacer output of it in
``output_dir``, one PNG: a row per image (the original first, then each defacer), with 3D renders
of the outer skin from the front, at 45 degrees and from the side (one camera for the whole row
set, fitted to the original) and the mid-sagittal slice through the brain with the altered voxels
in red and the brain mask's outline in cyan. The sheets show original faces: they are for the
rater's eyes only and are written outside any bidsapp output.

Usage::

    python scripts/rating_sheets.py BIDS_DIR OUTPUT_DIR SHEET_DIR [--only sub-x ...]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import nibabel as nib
import numpy as np

VIEWS = {"front": 0.0, "oblique": 45.0, "side": 90.0}
SIZE = 220


def _outputs(output_dir: Path, bids_dir: Path, original: Path
             ) -> dict[str, tuple[Path, Path | None]]:
    """defacer -> (defaced image, its defacemask) for one original."""
    stem = original.name.split(".nii")[0]
    entities, suffix = stem.rsplit("_", 1)
    folder = output_dir / original.parent.relative_to(bids_dir)
    found = {}
    for path in sorted(folder.glob(f"{entities}_desc-*_{suffix}.nii.gz")):
        match = re.search(r"_desc-([a-z0-9]+)_", path.name)
        if not match or match.group(1) in ("original", "brain"):
            continue
        name = match.group(1)
        mask = folder / f"{entities}_mod-{suffix}_desc-{name}_defacemask.nii.gz"
        found[name] = (path, mask if mask.exists() else None)
    return found


def _sagittal(ax, image: nib.Nifti1Image, altered: nib.Nifti1Image | None,
              brain: nib.Nifti1Image | None) -> None:
    canon = nib.as_closest_canonical(image)
    data = np.asanyarray(canon.dataobj).reshape(canon.shape[:3]).astype(np.float32)
    zooms = canon.header.get_zooms()[:3]
    brain_data = None
    if brain is not None:
        brain_data = np.asanyarray(nib.as_closest_canonical(brain).dataobj).reshape(
            canon.shape[:3]) > 0
    x = int(np.argwhere(brain_data).mean(0)[0]) if brain_data is not None and brain_data.any() \
        else data.shape[0] // 2
    top = float(np.percentile(data[data > 0], 99.5)) if (data > 0).any() else 1.0
    extent = (0, data.shape[1] * zooms[1], 0, data.shape[2] * zooms[2])
    ax.imshow(data[x].T, cmap="gray", origin="lower", vmin=0, vmax=top, extent=extent)
    if altered is not None:
        cut = np.asanyarray(nib.as_closest_canonical(altered).dataobj).reshape(
            canon.shape[:3])[x].T > 0
        overlay = np.zeros(cut.shape + (4,))
        overlay[cut] = (1, 0, 0, 0.45)
        ax.imshow(overlay, origin="lower", extent=extent)
    if brain_data is not None and brain_data[x].any():
        ax.contour(brain_data[x].T.astype(float), levels=[0.5], colors="cyan",
                   linewidths=0.6, origin="lower", extent=extent)


def sheet(original: Path, bids_dir: Path, output_dir: Path, out_file: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bidsapp.reports import plots

    stem = original.name.split(".nii")[0]
    entities, suffix = stem.rsplit("_", 1)
    outputs = _outputs(output_dir, bids_dir, original)
    brain_path = next(iter(output_dir.rglob(f"{entities}_mod-{suffix}_desc-brain_mask.nii.gz")),
                      None)
    brain = nib.load(brain_path) if brain_path else None
    original_img = nib.load(original)
    meshes = {"original": plots.head_mesh(original_img, brain)}
    for name, (path, _) in outputs.items():
        meshes[name] = plots.head_mesh(nib.load(path), brain)
    cameras = plots.cameras([meshes["original"]], VIEWS)
    rows = ["original", *outputs]
    fig, axes = plt.subplots(len(rows), 4, figsize=(4 * SIZE / 100, len(rows) * SIZE / 100),
                             dpi=100, facecolor="black", squeeze=False)
    for r, name in enumerate(rows):
        renders = plots.render_views(meshes[name], VIEWS, camera_by_view=cameras, size=SIZE)
        for c, view in enumerate(VIEWS):
            axes[r, c].imshow(renders[view], cmap="gray", vmin=0, vmax=255)
        if name == "original":
            _sagittal(axes[r, 3], original_img, None, brain)
        else:
            path, mask = outputs[name]
            _sagittal(axes[r, 3], nib.load(path), nib.load(mask) if mask else None, brain)
        axes[r, 0].text(4, 14, name, color="yellow", fontsize=9)
        for ax in axes[r]:
            ax.set_axis_off()
    fig.subplots_adjust(0, 0, 1, 1, 0.02, 0.02)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_file, facecolor="black")
    plt.close(fig)
    return out_file


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bids_dir", type=Path)
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("sheet_dir", type=Path)
    parser.add_argument("--only", nargs="*", default=[])
    args = parser.parse_args(argv)
    for original in sorted(args.bids_dir.glob("sub-*/**/anat/*.nii*")):
        if args.only and not any(o in original.name for o in args.only):
            continue
        out = args.sheet_dir / (original.name.split(".nii")[0] + ".png")
        print(sheet(original, args.bids_dir, args.output_dir, out))


if __name__ == "__main__":
    main()
