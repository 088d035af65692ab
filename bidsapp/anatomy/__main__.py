"""Child-process entry for the per-image anatomical steps (run by the workflow's nodes).

``python -m bidsapp.anatomy brainmask IMAGE OUT_MASK THREADS``
``python -m bidsapp.anatomy coregister TARGET T1W T1W_MASK OUT_DIR SEED THREADS``
``python -m bidsapp.anatomy template IMAGE BRAIN_MASK OUT_JSON SEED``
"""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np


def brainmask(image_path: str, out_path: str, threads: str) -> None:
    from bidsapp.anatomy.brainmask import deepbet_brain_mask
    from bidsapp.io import save_like

    image = nib.load(image_path)
    mask = deepbet_brain_mask(image, threads=int(threads))
    save_like(image, mask.astype(np.uint8), Path(out_path), dtype=np.uint8)


def coregister(target_path: str, t1w_path: str, t1w_mask_path: str, out_dir: str, seed: str,
               threads: str) -> None:
    from bidsapp.anatomy.coregister import carry_mask, rigid_register
    from bidsapp.io import save_like

    out = Path(out_dir)
    transform = rigid_register(Path(target_path), Path(t1w_path), out / "t1w_to_target_",
                               seed=int(seed), threads=int(threads))
    transform.replace(out / "t1w_to_target.mat")
    target = nib.load(target_path)
    t1_mask = nib.load(t1w_mask_path)
    # no edge extension for the brain: outside the T1w's field of view there is no brain
    mask = carry_mask(np.asanyarray(t1_mask.dataobj) > 0, t1_mask.affine, target,
                      out / "t1w_to_target.mat", extend_mm=0)
    save_like(target, mask.astype(np.uint8), out / "brain_mask.nii.gz", dtype=np.uint8)


def template(image_path: str, mask_path: str, out_path: str, seed: str) -> None:
    """pydeface's template registered to the image once, for every template defacer."""
    from bidsapp.anatomy.headsize import save_checked_registration

    image = nib.load(image_path)
    brain = np.asanyarray(nib.load(mask_path).dataobj) > 0
    save_checked_registration(out_path, image, brain, seed=int(seed),
                              work_dir=Path(out_path).parent)


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    {"brainmask": brainmask, "coregister": coregister, "template": template}[command](*arguments)
