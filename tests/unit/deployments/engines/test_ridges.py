"""kraken's ridge filter in bands on several threads gives skimage's own result."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import filters

from deployments.engines.segmentation import ridges


def heatmap(rows: int, cols: int) -> np.ndarray:
    """A baseline heatmap's look: thin bright ridges (lines of text) on noise."""
    rng = np.random.default_rng(7)
    image = rng.random((rows, cols), dtype=np.float32) * 0.1
    for row in range(40, rows - 20, 47):
        image[row:row + 3, 30:cols - 30] = 0.9
    return image


@pytest.mark.parametrize("threads", [2, 3])
def test_banded_sato_equals_skimage_s_sato_across_the_band_edges(threads: int) -> None:
    image = heatmap(1500, 200)
    expected = filters.sato(image, black_ridges=False, mode="constant")
    got = ridges.banded_sato(image, threads, black_ridges=False, mode="constant")
    assert got.shape == expected.shape
    assert np.array_equal(got, expected)  # bit for bit: every pixel saw what it sees whole
    assert (got > 0.3).sum() == (expected > 0.3).sum()  # the same skeleton comes out


def test_a_band_overlap_smaller_than_the_kernel_would_change_the_result(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: with too little overlap the band edges differ."""
    image = heatmap(1500, 200)
    expected = filters.sato(image, black_ridges=False, mode="constant")
    monkeypatch.setattr(ridges, "overlap", lambda sigmas=None: 40)
    got = ridges.banded_sato(image, 2, black_ridges=False, mode="constant")
    assert not np.array_equal(got, expected)


def test_install_points_kraken_at_the_banded_filter_and_back() -> None:
    from kraken.lib import segmentation

    try:
        ridges.install(2)
        assert segmentation.filters.sato is not filters.sato
        assert segmentation.filters.gaussian is filters.gaussian  # the rest is skimage's
        image = heatmap(1500, 100)
        assert np.allclose(segmentation.filters.sato(image, black_ridges=False),
                           filters.sato(image, black_ridges=False), rtol=0, atol=1e-6)
    finally:
        ridges.install(1)
    assert segmentation.filters is filters
