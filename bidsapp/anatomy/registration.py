"""Deterministic affine registration of a head template to an image (antspyx).

The registration is computed once per image; the result maps any array on the template's grid
(a face mask, a template intensity image) onto the image's own voxel grid, whatever its voxel
order, patient position or slice thickness.

Determinism: both images are block-averaged to about ``resolution_mm`` (no random resampling),
the metric samples a regular grid with a fixed seed, and ITK runs single-threaded. ITK reads its
thread count once per process, so ``register_template`` sets ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS``
to 1 before ITK is first used; call it in a fresh process (the runner's child) for results that
do not depend on the machine.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from bidsapp.geometry import block_factors, block_mean

#: RAS <-> LPS (ITK's physical space) flip.
_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class TemplateRegistration:
    """An affine map from the image's world space to the template's (RAS millimetres).

    ``image_to_template`` takes a point of the image (scanner RAS mm) to the matching template
    point. ``template_affine``/``template_shape`` describe the template grid.
    """

    image_to_template: np.ndarray
    template_affine: np.ndarray
    template_shape: tuple[int, int, int]
    parameters: dict[str, Any] = field(default_factory=dict)

    def voxel_map(self, image_affine: np.ndarray) -> np.ndarray:
        """4x4 matrix from image voxel indices to template voxel indices."""
        return np.linalg.inv(self.template_affine) @ self.image_to_template @ image_affine

    def to_image(
        self,
        template_data: np.ndarray,
        image_shape,
        image_affine: np.ndarray,
        *,
        order: int = 1,
        mode: str = "nearest",
        cval: float = 0.0,
    ) -> np.ndarray:
        """Resample an array on the template grid onto the image grid (float32).

        ``mode="nearest"`` replicates the template's edge values beyond its field of view, so a
        mask that touches the template's border extends past it.
        """
        vox = self.voxel_map(np.asarray(image_affine, dtype=float))
        return ndimage.affine_transform(
            np.asarray(template_data, dtype=np.float32),
            vox[:3, :3],
            offset=vox[:3, 3],
            output_shape=tuple(int(s) for s in image_shape[:3]),
            order=order,
            mode=mode,
            cval=cval,
            output=np.float32,
        )

    def image_points_to_template(self, points_ras: np.ndarray) -> np.ndarray:
        """Map (N, 3) image world points to template world points."""
        return nib.affines.apply_affine(self.image_to_template, points_ras)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form; :meth:`from_json` gives back an equal registration (floats exact)."""
        return {"image_to_template": np.asarray(self.image_to_template).tolist(),
                "template_affine": np.asarray(self.template_affine).tolist(),
                "template_shape": list(self.template_shape), "parameters": self.parameters}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TemplateRegistration:
        return cls(image_to_template=np.asarray(data["image_to_template"], dtype=float),
                   template_affine=np.asarray(data["template_affine"], dtype=float),
                   template_shape=tuple(data["template_shape"]), parameters=data["parameters"])


def block_downsample(data: np.ndarray, affine: np.ndarray, resolution_mm: float):
    """Average blocks of voxels to about ``resolution_mm`` per axis; returns (data, affine).

    Axes already coarser than the target (thick slices) keep their spacing. Deterministic and
    anti-aliased (block mean), unlike point resampling.
    """
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    factors = block_factors(zooms, resolution_mm)
    small = block_mean(np.asarray(data, dtype=np.float32), factors)
    scale = np.diag(factors + [1]).astype(float)
    scale[:3, 3] = (np.asarray(factors, dtype=float) - 1) / 2
    return small, affine @ scale


def _ants():
    """antspyx with only its core loaded: about 1.5 s instead of 10 (its package also imports
    matplotlib, statsmodels and scikit-learn). The rest loads on first use of another name."""
    import importlib.util
    import sys

    if "ants" not in sys.modules:
        spec = importlib.util.find_spec("ants")
        package = importlib.util.module_from_spec(spec)

        def load_all(name: str):
            del package.__getattr__
            spec.loader.exec_module(package)
            return getattr(package, name)

        package.__getattr__ = load_all
        sys.modules["ants"] = package
        importlib.import_module("ants.lib")  # before ants.internal's ``from ants import lib``
        core = importlib.import_module("ants.core")
        # as the package's ``from .core import *``: core's functions call each other as ``ants.*``
        names = getattr(core, "__all__", [n for n in vars(core) if not n.startswith("_")])
        package.__dict__.update({n: getattr(core, n) for n in names})
    import ants.core
    import ants.internal

    return ants


def _to_ants(data: np.ndarray, affine: np.ndarray):
    """An ANTsImage in ITK's LPS physical space from a RAS voxel-to-world affine."""
    ants = _ants()
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    lps = _FLIP @ affine
    return ants.core.from_numpy(
        np.ascontiguousarray(data, dtype=np.float32),
        origin=tuple(float(v) for v in lps[:3, 3]),
        spacing=tuple(float(z) for z in zooms),
        direction=lps[:3, :3] / zooms,
    )


def _normalise(data: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] with the 99.5th percentile of the non-zero voxels as 1."""
    data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    data = np.clip(data, 0, None)
    positive = data[data > 0]
    top = float(np.percentile(positive, 99.5)) if positive.size else 1.0
    return np.clip(data / (top or 1.0), 0, 1).astype(np.float32)


def _centroid(mask_or_weights: np.ndarray, affine: np.ndarray) -> np.ndarray:
    weights = np.asarray(mask_or_weights, dtype=np.float64)
    total = weights.sum()
    if total <= 0:
        return nib.affines.apply_affine(affine, (np.asarray(weights.shape) - 1) / 2)
    idx = [
        (
            weights.sum(axis=tuple(a for a in range(3) if a != ax)) * np.arange(weights.shape[ax])
        ).sum()
        / total
        for ax in range(3)
    ]
    return nib.affines.apply_affine(affine, idx)


def _write_start(path: Path, shift_ras: np.ndarray, scale: float = 1.0) -> None:
    """Write an ITK affine (fixed LPS point -> moving LPS point): ``scale * p + shift`` in RAS."""
    core = _ants().core
    shift_lps = _FLIP[:3, :3] @ shift_ras
    tx = core.create_ants_transform(transform_type="AffineTransform", dimension=3)
    matrix = np.eye(3) * float(scale)
    tx.set_parameters(np.concatenate([matrix.ravel(), shift_lps]).tolist())
    tx.set_fixed_parameters([0.0, 0.0, 0.0])
    core.write_transform(tx, str(path))


def _read_affine(path: Path) -> np.ndarray:
    """Read an ITK affine .mat as a 4x4 RAS matrix (fixed point -> moving point)."""
    tx = _ants().core.read_transform(str(path))
    params = np.asarray(tx.parameters, dtype=float)
    center = np.asarray(tx.fixed_parameters, dtype=float)
    matrix = params[:9].reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = matrix
    lps[:3, 3] = params[9:12] + center - matrix @ center
    return _FLIP @ lps @ _FLIP


@dataclass(frozen=True)
class Template:
    """A head template: its voxels and affine, plus (optionally) the centre of its brain."""

    data: np.ndarray
    affine: np.ndarray
    brain_centroid_ras: np.ndarray | None = None
    name: str = "template"


#: Centre (RAS mm) of the deepbet brain mask of pydeface's template (measured once; 1394 ml).
PYDEFACE_BRAIN_CENTROID = (-5.61, -3.31, 4.17)


@lru_cache(maxsize=1)
def pydeface_template() -> Template:
    """pydeface's 1 mm mean head (``mean_reg2mean.nii.gz``) with its brain centroid (cached)."""
    from bidsapp.anatomy.templates import pydeface_file

    img = nib.load(pydeface_file("mean_reg2mean.nii.gz"))
    return Template(
        data=np.asanyarray(img.dataobj),
        affine=img.affine,
        brain_centroid_ras=np.array(PYDEFACE_BRAIN_CENTROID),
        name="pydeface mean_reg2mean",
    )


def register_template(
    image: nib.Nifti1Image,
    *,
    template: Template | None = None,
    resolution_mm: float = 4.0,
    brain_mask: np.ndarray | None = None,
    seed: int = 1,
    iterations: tuple[int, int] = (100, 50),
    sampling_rate: float = 0.2,
    work_dir: Path | None = None,
    initial_scale: float = 1.0,
    data: np.ndarray | None = None,
) -> TemplateRegistration:
    """Affinely register ``template`` (default: pydeface's head) to ``image``.

    Both are block-averaged to about ``resolution_mm`` (levels at twice and once that spacing);
    the metric is Mattes mutual information (any contrast). The start is a translation that
    aligns the brain centroids when ``brain_mask`` (on the image grid) is given and the template
    knows its brain centroid, else the intensity centres of mass. ``initial_scale`` (template mm
    per image mm, about the brain centroid) starts a head of another size (an infant's) near its
    scale; 1 is a pure translation. Deterministic for fixed arguments (see the module docstring).
    ``data``: the image's voxels when already read (``np.asanyarray(image.dataobj)``).
    """
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"
    _ants()  # imported after the thread setting on purpose
    from ants.internal import get_lib_fn, get_pointer_string, process_arguments

    template = template or pydeface_template()
    data = np.asanyarray(image.dataobj) if data is None else data
    if data.ndim > 3:
        data = data[..., 0]
    fixed_data, fixed_affine = block_downsample(
        np.nan_to_num(np.asarray(data, dtype=np.float32)), image.affine, resolution_mm
    )
    moving_data, moving_affine = block_downsample(template.data, template.affine, resolution_mm)
    fixed_data, moving_data = _normalise(fixed_data), _normalise(moving_data)
    if brain_mask is not None and brain_mask.any() and template.brain_centroid_ras is not None:
        start = "brain centroids"
        centre = _centroid(brain_mask, image.affine)
        shift = template.brain_centroid_ras - initial_scale * centre
    else:
        start = "intensity centres of mass"
        centre = _centroid(fixed_data, fixed_affine)
        shift = _centroid(moving_data, moving_affine) - initial_scale * centre

    fixed = _to_ants(fixed_data, fixed_affine)
    moving = _to_ants(moving_data, moving_affine)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="reg") as tmp:
        init = Path(tmp) / "init.mat"
        _write_start(init, shift, initial_scale)
        prefix = str(Path(tmp) / "out")
        f_ptr, m_ptr = get_pointer_string(fixed), get_pointer_string(moving)
        args = [
            "--dimensionality", "3",
            "--float", "1",
            "--collapse-output-transforms", "1",
            "--write-composite-transform", "0",
            "--output", prefix,
            "--interpolation", "Linear",
            "--use-histogram-matching", "0",
            "--random-seed", str(int(seed)),
            "--initial-moving-transform", str(init),
            "--transform", "Affine[0.25]",
            "--metric", f"MI[{f_ptr},{m_ptr},1,32,Regular,{sampling_rate}]",
            "--convergence", f"[{iterations[0]}x{iterations[1]},1e-6,10]",
            "--shrink-factors", "2x1",
            "--smoothing-sigmas", "1x0vox",
        ]  # fmt: skip
        status = get_lib_fn("antsRegistration")(process_arguments(args))
        if status != 0:
            raise RuntimeError(f"antsRegistration failed with status {status}")
        fixed_to_moving = _read_affine(Path(prefix + "0GenericAffine.mat"))
    return TemplateRegistration(
        image_to_template=fixed_to_moving,
        template_affine=np.asarray(template.affine, dtype=float),
        template_shape=tuple(int(s) for s in template.data.shape[:3]),
        parameters={
            "template": template.name,
            "engine": "antspyx antsRegistration (affine, Mattes MI)",
            "resolution_mm": resolution_mm,
            "levels_mm": [2 * resolution_mm, resolution_mm],
            "iterations": list(iterations),
            "sampling": f"regular, rate {sampling_rate}, seed {seed}",
            "itk_threads": 1,
            "start": start,
            **({"initial_scale": round(float(initial_scale), 4)} if initial_scale != 1.0 else {}),
        },
    )
