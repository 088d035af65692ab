"""quickshear (Schimke & Hale 2011) driven by a deepbet brain mask."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from bidsapp.defacers.base import (
    Availability, DefaceOutput, DefaceRequest, Defacer, python_module_version, remove_voxels,
)

#: quickshear's own default distance (voxels) between the shearing plane and the brain.
BUFFER_VOXELS = 10


class QuickShear(Defacer):
    name = "quickshear"
    title = "Quickshear"
    summary = "shears off everything below a plane tangent to the brain's lower hull (deepbet mask)"
    citation = ("Schimke N, Hale J (2011). Quickshear defacing for neuroimages. "
                "HealthSec'11, USENIX.")
    license = "BSD-3-Clause"
    needs_brain_mask = True

    def availability(self) -> Availability:
        found = python_module_version("quickshear")
        if not found.available:
            return found
        brain = python_module_version("deepbet")
        if not brain.available:
            return Availability(False, f"quickshear needs a brain mask: {brain.reason}")
        return found

    def deface(self, request: DefaceRequest) -> DefaceOutput:
        from quickshear import quickshear

        if request.brain_mask is None:
            raise ValueError("quickshear needs a brain mask")
        image = request.image
        ones = nib.Nifti1Image(np.ones(image.shape[:3], dtype=np.uint8), image.affine)
        mask_img = nib.Nifti1Image(request.brain_mask.astype(np.uint8), image.affine)
        kept = np.asanyarray(quickshear(ones, mask_img, buff=BUFFER_VOXELS).dataobj).astype(bool)
        return DefaceOutput(
            data=remove_voxels(image, ~kept),
            parameters={"buffer_voxels": BUFFER_VOXELS, "brain_mask": "deepbet"},
        )
