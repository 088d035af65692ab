"""Faces on skin renders: the camera grid, a fast depth-map renderer, dlib's CNN detector,
5-point landmarks and embeddings (in memory only). Depends on numpy, scipy, scikit-image and
dlib only; :mod:`bidsapp.metrics` builds on it. See docs/metrics_defacing.md."""
