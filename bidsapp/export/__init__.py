"""A shareable copy of the input dataset: faces removed, identifying metadata scrubbed.

:func:`export_dataset` writes a complete raw BIDS dataset into a new folder:

- every anatomical image (the suffixes in :data:`bidsapp.bids.ANAT_SUFFIXES`) is replaced by
  one defacer's output from the participant level. An image is *refused* when that defacer
  failed, left no output, changed no voxel, wrote an image off the input's grid, altered
  brain voxels, or when the group level's verdict for it is ``fail`` (the face remains, a face
  is still detected, or the person was re-identified: ``verdicts``); one refusal stops the
  whole export (nothing but the report is written) unless ``force``. With ``force`` a
  defaced image that altered the brain or changed nothing is shipped, and an image with no
  usable defaced version is left out with its sidecar (never shipped with its face);
- every JSON file (sidecars, top-level inheritance files, ``participants.json``, ...) loses the
  keys in the scrub list, at any depth; an unchanged JSON is linked as it is;
- every NIfTI file gets its header text fields (:data:`NIFTI_TEXT_FIELDS`) blanked, its
  header extensions and any gzip file name, comment or time stamp dropped; voxel data, dtype,
  scaling and transforms are kept byte for byte. A NIfTI with nothing to clear is linked;
- every other file is hard-linked (copied when linking is impossible);
- ``sourcedata/``, ``derivatives/`` and hidden files (except ``.bidsignore``) are left out:
  they hold DICOMs, other tools' images with faces, or converter caches with patient names;
- ``dataset_description.json`` stays a raw dataset's and gains a ``GeneratedBy`` entry.

The copy is built in a hidden ``.<name>.partial-<pid>`` folder beside ``export_dir`` and
renamed into place at the end, so an interrupted export never looks finished. The
de-identification report (:func:`report_path`) is written beside the export, outside it.

The steps, each a module that only looks down: :mod:`~bidsapp.export.dataset` (the export),
:mod:`~bidsapp.export.decide` (request checks, per-image policy), :mod:`~bidsapp.export.tree`
(building the copy), :mod:`~bidsapp.export.report`, :mod:`~bidsapp.export.scrub` (JSON and
TSV), :mod:`~bidsapp.export.nifti` (header bytes) and :mod:`~bidsapp.export.paths`.
"""

from bidsapp.export.dataset import export_dataset
from bidsapp.export.decide import ExportError, image_name
from bidsapp.export.nifti import NIFTI_TEXT_FIELDS, clean_nifti, nifti_identifiers
from bidsapp.export.report import ExportReport, ImageDecision, report_path
from bidsapp.export.scrub import DEFAULT_SCRUB_FIELDS, scrub_fields_for, scrub_metadata

__all__ = [
    "DEFAULT_SCRUB_FIELDS", "NIFTI_TEXT_FIELDS", "ExportError", "ExportReport", "ImageDecision",
    "clean_nifti", "export_dataset", "image_name", "nifti_identifiers", "report_path",
    "scrub_fields_for", "scrub_metadata",
]
