"""MRIQC's anatomical image-quality metrics (IQMs), from arrays and masks, vectorised.

Written from the definitions in MRIQC 24.0.2 (``mriqc/qc/anatomical.py`` and its ``StructuralQC``
interface; Esteban et al. 2017) and checked against those functions in ``tests/test_iqms.py``.
Keys are MRIQC's. Inputs, as in MRIQC's workflow:

* ``data``: the raw image (``qi_2`` on the hat mask, ``fwhm_*`` in the brain);
* ``tissues.corrected``: the N4-corrected image, harmonised here (WM median = 1000) for the
  summary statistics, SNRs, CNR, CJV, EFC, FBER and WM2MAX;
* ``tissues.bias``: the N4 field (``inu_*``), ``tissues.probs``/``labels`` (tissue statistics,
  ``icvs_*``, ``rpve_*``), and the masks of :mod:`bidsapp.anatomy.masks`.

The modules, from the bottom up: :mod:`.stats` (harmonisation, weighted summary statistics),
:mod:`.measures` and :mod:`.qi2` (one IQM each), :mod:`.image` (every IQM of one image:
:func:`~.image.iqms_from_arrays`, :func:`~.image.image_iqms`) and :mod:`.defaced` (a defaced
image against its original, :func:`~.defaced.pair_iqms`, and the record section for an
original and all its defacers, :func:`~.defaced.record_iqms`).

See docs/metrics_iqms.md for every definition and the deliberate differences (``fwhm_*`` is
AFNI's classic first-difference estimator re-implemented, not 3dFWHMx).
"""
