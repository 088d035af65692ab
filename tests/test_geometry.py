"""Bounding boxes and block averages on a real brain mask and a real image."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bidsapp.geometry import block_factors, block_mean, bounding_box

IMAGE = "ds-faces/sub-xa30/anat/sub-xa30_run-1_T1w.nii.gz"


def _testdata() -> Path:
    root = os.environ.get("BIDSAPP_TESTDATA")
    if not root or not (Path(root) / IMAGE).exists():
        pytest.skip("test data not found: set BIDSAPP_TESTDATA")
    return Path(root)


def test_bounding_box_holds_exactly_the_mask_grown_by_the_margin():
    image = nib.load(str(_testdata() / IMAGE))
    data = np.asanyarray(image.dataobj)
    mask = data > np.percentile(data, 90)
    index = np.argwhere(mask)
    margin = (3, 0, 7)
    box = bounding_box(mask, margin)
    low = np.maximum(index.min(0) - margin, 0)
    high = np.minimum(index.max(0) + np.asarray(margin) + 1, mask.shape)
    assert box == tuple(slice(int(a), int(b)) for a, b in zip(low, high))
    assert mask[bounding_box(mask)].sum() == mask.sum()
    assert bounding_box(np.zeros(mask.shape, dtype=bool)) is None
    assert bounding_box(mask, 10_000) == tuple(slice(0, n) for n in mask.shape)


def test_block_mean_is_the_mean_of_each_block():
    image = nib.load(str(_testdata() / IMAGE))
    data = np.asanyarray(image.dataobj).astype(np.float32)
    factors = block_factors(image.header.get_zooms(), 3.0)
    small = block_mean(data, factors)
    assert small.shape == tuple(s // f for s, f in zip(data.shape, factors))
    i, j, k = (n // 2 for n in small.shape)
    block = data[i * factors[0]:(i + 1) * factors[0], j * factors[1]:(j + 1) * factors[1],
                 k * factors[2]:(k + 1) * factors[2]]
    assert small[i, j, k] == np.float32(block.mean(dtype=np.float64))
    assert small.dtype == np.float32


def test_block_mean_makes_one_block_of_a_short_axis():
    data = np.arange(2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8)
    small = block_mean(data, (4, 4, 4))
    assert small.shape == (1, 2, 2)
    padded = np.concatenate([data, data[-1:], data[-1:]])  # edge values fill the block
    assert small[0, 0, 0] == np.float32(padded[:4, :4, :4].mean(dtype=np.float64))


def test_block_factors_keep_coarse_axes():
    assert block_factors((1.0, 0.5, 6.0), 2.0) == [2, 4, 1]
