"""dlib's face models, loaded once per process from the installed wheels (no network).

* :func:`detector`: the CNN face detector (max-margin object detection, King 2015), file
  ``mmod_human_face_detector.dat``;
* :func:`landmarker`: the 5-point landmark model ``shape_predictor_5_face_landmarks.dat``
  (two corners of each eye and the base of the nose);
* :func:`encoder`: the ResNet embedding model ``dlib_face_recognition_resnet_model_v1.dat``
  (128-d descriptors; two photos of one person are usually closer than 0.6).

The files ship in the PyPI package ``face-recognition-models`` (MIT licence; the models are
Davis King's, released under CC0 / public domain); dlib itself comes from the PyPI wheel
``dlib-bin`` (Boost Software Licence). The 68-point model in the same package is never used
(its training data, iBUG 300-W, forbids commercial use).
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

DETECTOR_FILE = "mmod_human_face_detector.dat"
LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
ENCODER_FILE = "dlib_face_recognition_resnet_model_v1.dat"


class MissingModels(RuntimeError):
    """dlib or the model files are not installed."""


def model_path(name: str) -> Path:
    """Path of one model file inside the installed ``face_recognition_models`` package.

    The package is located without importing it (its ``__init__`` needs ``pkg_resources``).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MissingModels("the face models are missing: pip install face-recognition-models")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    if not path.is_file():
        raise MissingModels(f"{path} is missing: reinstall face-recognition-models")
    return path


def _dlib():
    try:
        import dlib
    except ImportError as exc:  # pragma: no cover - a dependency of bidsapp
        raise MissingModels("dlib is missing: pip install dlib-bin") from exc
    return dlib


@lru_cache(maxsize=1)
def detector():
    """dlib's CNN face detector (``dlib.cnn_face_detection_model_v1``)."""
    return _dlib().cnn_face_detection_model_v1(str(model_path(DETECTOR_FILE)))


@lru_cache(maxsize=1)
def landmarker():
    """dlib's 5-point shape predictor."""
    return _dlib().shape_predictor(str(model_path(LANDMARKS_FILE)))


@lru_cache(maxsize=1)
def encoder():
    """dlib's ResNet face recognition model (128-d embeddings)."""
    return _dlib().face_recognition_model_v1(str(model_path(ENCODER_FILE)))
