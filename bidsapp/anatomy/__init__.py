"""Anatomical derivatives of the original image, computed once per image and reused."""
