"""pydeface's method (Gulban et al.) on a pip-only engine: a template face mask, carried across.

pydeface registers its mean head template to the image with FSL FLIRT (affine), carries its
face mask (1 = keep, 0 = face) into the image with the same transform and multiplies. Here the
registration is antspyx's (:func:`bidsapp.anatomy.registration.register_template`,
deterministic, started at the scale the deepbet brain volume implies for an infant's head and
checked against the brain mask: :mod:`bidsapp.anatomy.headsize`), the mask is interpolated
linearly and voxels where it is below 0.5 are removed.
As in pydeface, voxels outside the template's field of view count as mask 0 (removed); the
runner's brain guard restores anything near the brain.
"""

from __future__ import annotations

import numpy as np

from bidsapp.defacers.base import (
    Availability,
    DefaceOutput,
    Defacer,
    DefaceRequest,
    remove_voxels,
    template_defacer_availability,
    template_registration,
)


class FaceMask(Defacer):
    """Remove pydeface's template face region after an antspyx affine registration."""

    name = "facemask"
    title = "pydeface face mask (antspyx registration)"
    summary = (
        "pydeface's template face mask carried to the image by an antspyx affine registration"
    )
    citation = (
        "Gulban OF, et al. poldracklab/pydeface (method and template); "
        "Avants BB, et al. ANTs / antspyx (registration)."
    )
    license = "MIT (pydeface template and mask); Apache-2.0 (antspyx)"
    needs_brain_mask = False
    guard_by_default = True
    uses_template_registration = True

    def availability(self) -> Availability:
        return template_defacer_availability("mean_reg2mean.nii.gz", "facemask.nii.gz")

    def deface(self, request: DefaceRequest) -> DefaceOutput:
        import nibabel as nib

        from bidsapp.anatomy.templates import pydeface_file

        image = request.image
        reg, size = template_registration(request)
        facemask = np.asanyarray(nib.load(pydeface_file("facemask.nii.gz")).dataobj)
        keep = reg.to_image(facemask, image.shape, image.affine, order=1, mode="constant")
        removed = keep < 0.5
        data = remove_voxels(image, removed)
        return DefaceOutput(
            data=data,
            parameters={
                **reg.parameters,
                **(size.record() if size else {}),
                "mask": "pydeface facemask.nii.gz, linear, removed where < 0.5",
                "outside_template_fov": "removed (as pydeface)",
                "removed_voxels": int(removed.sum()),
            },
            notes=[
                (
                    "pydeface's face mask; FSL FLIRT replaced by a deterministic antspyx affine "
                    "registration at 4 mm"
                )
            ],
        )
