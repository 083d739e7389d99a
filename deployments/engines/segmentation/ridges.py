"""kraken blla's ridge filter on every core it may use, with the same result.

Profiling blla on a page (docs/benchmarks.md, "Where kraken blla's time goes") shows 40%
of it in one call: `skimage.filters.sato` on the baseline heatmap, in kraken's
`vectorize_lines`. It runs five Gaussian Hessians one after another on one core while the
rest of the machine waits. A Hessian at a pixel depends only on the pixels within its
kernels' reach, so the map is cut into horizontal bands that overlap by more than that,
filtered in threads (scipy's filters release the GIL) and put back together: the same
values bit for bit, in about half the time on two cores. `install` points kraken's module
at it; nothing else in kraken changes.
"""

from __future__ import annotations

import math
import types
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

# skimage's sato defaults: sigmas 1, 3, 5, 7, 9. Its Hessian is two Gaussian passes of
# sigma / sqrt(2), truncated at 8 sigmas (100 for sigma <= 1, against aliasing), each
# reaching int(truncate * sigma + 0.5) pixels as scipy's filters do.
SATO_SIGMAS = range(1, 10, 2)


def overlap(sigmas: Any = SATO_SIGMAS) -> int:
    """Rows a band must reach past its own so every one of its pixels sees all it sees in
    the whole map."""
    def reach(sigma: float) -> int:
        truncate = 8 if sigma > 1 else 100
        return 2 * int(truncate * sigma / math.sqrt(2) + 0.5)

    return max(reach(float(sigma)) for sigma in sigmas) + 1


def banded_sato(image: np.ndarray, threads: int, **options: Any) -> np.ndarray:
    """skimage.filters.sato(image, **options), computed in `threads` horizontal bands."""
    from skimage import filters

    rows = image.shape[0]
    margin = overlap(options.get("sigmas", SATO_SIGMAS))
    # A band of fewer rows than 4 margins would filter more overlap than rows of its own.
    bands = max(1, min(threads, rows // (4 * margin)))
    if bands == 1 or image.ndim != 2:
        return filters.sato(image, **options)
    cuts = np.linspace(0, rows, bands + 1, dtype=int)

    def band(index: int) -> np.ndarray:
        top, bottom = int(cuts[index]), int(cuts[index + 1])
        start, stop = max(0, top - margin), min(rows, bottom + margin)
        filtered = filters.sato(image[start:stop], **options)
        return filtered[top - start: top - start + bottom - top]

    with ThreadPoolExecutor(bands, thread_name_prefix="sato") as pool:
        return np.vstack(list(pool.map(band, range(bands))))


def install(threads: int) -> None:
    """Make kraken's blla use banded_sato with `threads` threads (idempotent)."""
    from kraken.lib import segmentation
    from skimage import filters

    if threads < 2:
        segmentation.filters = filters
        return
    shim = types.ModuleType("skimage.filters, sato in bands")
    shim.__getattr__ = lambda name: getattr(filters, name)  # type: ignore[method-assign]
    shim.sato = lambda image, **options: banded_sato(image, threads, **options)  # type: ignore[attr-defined]
    segmentation.filters = shim
