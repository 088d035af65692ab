"""deepdefacer (Khazane et al. 2022): a 3D U-Net that predicts which voxels to keep.

The published command no longer runs (old nibabel, SimpleITK and Keras APIs, writes into the
working directory), so this module runs the published model itself with Keras 3 on torch. The
method is the original one: resize the whole field of view to 160^3, min-max normalise, predict
a keep mask (>= 0.5), bring it back to the image grid. Unlike the original, which feeds the
stored voxel order as it is, the image is first reoriented (voxel axes only, no resampling) to
RAS, the voxel order the model expects: fed a PSR or sagittal image as stored, the model
removes a wrong block of voxels, brain included.
"""

from __future__ import annotations

import hashlib
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel import orientations as ornt

from bidsapp.defacers.base import (
    Availability,
    DefaceOutput,
    Defacer,
    DefaceRequest,
    remove_voxels,
)

#: Voxel axes the model expects (found on the pydeface template presented in all 48 voxel
#: orderings: only RAS and its mirror LAS remove the face and no brain).
MODEL_AXCODES = ("R", "A", "S")
#: The grid the whole field of view is resized to before prediction.
MODEL_SHAPE = (160, 160, 160)
#: Predicted probabilities at or above this are kept.
THRESHOLD = 0.5
INSTALL_HINT = "install the deepdefacer wheel with `pip install --no-deps deepdefacer`"


def model_file() -> Path | None:
    """Path of the trained model in the deepdefacer wheel, or None (the package is not imported:
    its ``__init__`` needs TensorFlow and SimpleITK)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        path = Path(str(distribution("deepdefacer").locate_file("deepdefacer/model.hdf5")))
    except PackageNotFoundError:
        return None
    return path if path.is_file() else None


def _import_keras():
    """Import Keras, on the torch backend unless Keras was already imported in this process."""
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "torch"
    import keras

    return keras


def _dice_coefficient(y_true, y_pred, smooth=1.0):
    """The training metric saved with the model; needed by name to deserialise it."""
    from keras import ops

    y_true, y_pred = ops.reshape(y_true, (-1,)), ops.reshape(y_pred, (-1,))
    overlap = ops.sum(y_true * y_pred)
    return (2.0 * overlap + smooth) / (ops.sum(y_true) + ops.sum(y_pred) + smooth)


@lru_cache(maxsize=2)
def load_model(path: Path) -> tuple[Any, str]:
    """The Keras model stored at ``path`` and the file's sha256 (cached per process)."""
    keras = _import_keras()
    model = keras.models.load_model(
        path, custom_objects={"dice_coefficient": _dice_coefficient}, compile=False
    )
    return model, hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _resize(volume: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Trilinear resize of a 3D array to ``shape``; corner voxels map onto corner voxels."""
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None]
    resized = F.interpolate(tensor, size=tuple(shape), mode="trilinear", align_corners=True)
    return resized[0, 0].numpy()


def predict_keep(volume: np.ndarray, model) -> np.ndarray:
    """Boolean keep mask of a 3D array already in the model's orientation (any shape)."""
    small = _resize(volume, MODEL_SHAPE)
    low, high = float(small.min()), float(small.max())
    small = (small - low) / (high - low + 1e-7)
    prob = model.predict(small[None, None], batch_size=1, verbose=0)
    prob = np.asarray(prob, dtype=np.float32).reshape(MODEL_SHAPE)
    return _resize(prob, volume.shape) >= THRESHOLD


def removed_voxels(image: nib.Nifti1Image, model, axcodes=MODEL_AXCODES) -> np.ndarray:
    """Boolean mask of the voxels deepdefacer removes, on the image's own grid.

    The stored array is reoriented to ``axcodes`` (a permutation and flips of voxel axes), the
    prediction is made there and reoriented back. ``axcodes=None`` feeds the stored voxel order
    as it is, as the original command does.
    """
    shape = image.shape
    if len(shape) < 3 or int(np.prod(shape[3:])) != 1:
        raise ValueError(f"deepdefacer needs a 3D image, got shape {shape}")
    data = np.asanyarray(image.dataobj, dtype=np.float32).reshape(shape[:3])
    data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    if axcodes is None:
        return ~predict_keep(data, model).reshape(shape)
    stored = ornt.io_orientation(image.affine)
    to_model = ornt.ornt_transform(stored, ornt.axcodes2ornt(axcodes))
    keep = predict_keep(ornt.apply_orientation(data, to_model), model)
    back = ornt.ornt_transform(ornt.axcodes2ornt(axcodes), stored)
    return np.ascontiguousarray(ornt.apply_orientation(~keep, back)).reshape(shape)


class DeepDefacer(Defacer):
    name = "deepdefacer"
    title = "DeepDefacer"
    summary = "3D U-Net that predicts the face voxels to remove (model run in its RAS orientation)"
    citation = ("Khazane A, Hoachuck J, Gorgolewski KJ, Poldrack RA (2022). DeepDefacer: "
                "automatic removal of facial features via U-Net image segmentation. "
                "arXiv:2205.15536.")
    license = "MIT"

    def availability(self) -> Availability:
        from importlib.metadata import version

        try:
            _import_keras()
            import h5py  # noqa: F401  (Keras reads the .hdf5 model with it)
        except Exception as exc:  # noqa: BLE001  (a broken install may raise anything)
            return Availability(False, f"keras/h5py cannot be imported ({exc})")
        path = model_file()
        if path is None:
            return Availability(False, f"deepdefacer's model.hdf5 was not found: {INSTALL_HINT}")
        return Availability(True, version=version("deepdefacer"))

    def deface(self, request: DefaceRequest) -> DefaceOutput:
        import torch

        path = model_file()
        if path is None:
            raise RuntimeError(f"deepdefacer's model.hdf5 was not found: {INSTALL_HINT}")
        torch.set_num_threads(max(1, int(request.threads)))
        model, sha256 = load_model(path)
        image = request.image
        stored = "".join(nib.aff2axcodes(image.affine))
        removed = removed_voxels(image, model)
        keras = sys.modules["keras"]
        notes = []
        if stored != "".join(MODEL_AXCODES):
            notes.append(f"voxel axes reoriented {stored} -> {''.join(MODEL_AXCODES)} for the "
                         "model and back (no resampling)")
        return DefaceOutput(
            data=remove_voxels(image, removed),
            parameters={
                "model": path.name, "model_sha256": sha256,
                "model_orientation": "".join(MODEL_AXCODES), "input_orientation": stored,
                "model_shape": list(MODEL_SHAPE), "interpolation": "trilinear, corners aligned",
                "normalisation": "min-max", "threshold": THRESHOLD,
                "keras_version": keras.__version__, "keras_backend": keras.config.backend(),
                "threads": max(1, int(request.threads)),
            },
            notes=notes,
        )
