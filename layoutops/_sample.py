"""A small synthetic RGB image, generated deterministically (no data file to ship).

The picture has something for every layer of the demo to respond to: a smooth colour gradient,
a disc with a sharp edge, diagonal stripes and a small checkerboard patch.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sample_image", "sample_batch"]


def sample_image(size: int = 32, dtype=np.float32) -> np.ndarray:
    """A ``(size, size, 3)`` RGB image with values in ``[0, 1]`` (height, width, channel).

    Parameters
    ----------
    size : int, optional
        Height and width in pixels (>= 4). Default 32.
    dtype : dtype, optional
        A float dtype. Default float32.

    Returns
    -------
    numpy.ndarray
        Shape ``(size, size, 3)``; the same values on every call.

    Raises
    ------
    ValueError
        If ``size`` < 4.

    Examples
    --------
    >>> from layoutops._sample import sample_image
    >>> img = sample_image()
    >>> img.shape, img.dtype.name, bool(img.min() >= 0 and img.max() <= 1)
    ((32, 32, 3), 'float32', True)
    """
    if int(size) != size or size < 4:
        raise ValueError(f"`sample_image`: `size` must be an integer >= 4, got {size!r}")
    size = int(size)
    t = (np.arange(size, dtype=np.float64) + 0.5) / size
    y, x = np.meshgrid(t, t, indexing="ij")
    red = x.copy()
    green = y.copy()
    blue = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * (x + y))  # diagonal stripes
    disc = (x - 0.62) ** 2 + (y - 0.38) ** 2 < 0.22**2
    red[disc] = 1.0
    green[disc] = 0.25
    blue[disc] = 0.1
    checker = ((np.floor(x * 16) + np.floor(y * 16)) % 2).astype(np.float64)
    patch = (x < 0.35) & (y > 0.6)
    for channel in (red, green, blue):
        channel[patch] = checker[patch]
    img = np.stack([red, green, blue], axis=-1)
    return np.clip(img, 0.0, 1.0).astype(dtype)


def sample_batch(batch: int = 2, size: int = 32, dtype=np.float32) -> np.ndarray:
    """``batch`` variants of :func:`sample_image` (item ``b`` rotated by ``b`` quarter turns,
    then mirrored every fourth), in NHWC layout.

    Parameters
    ----------
    batch : int, optional
        Number of images (>= 1). Default 2.
    size : int, optional
        Height and width. Default 32.
    dtype : dtype, optional
        A float dtype. Default float32.

    Returns
    -------
    numpy.ndarray
        Shape ``(batch, size, size, 3)``, C-contiguous.

    Examples
    --------
    >>> from layoutops._sample import sample_batch
    >>> sample_batch(3, 16).shape
    (3, 16, 16, 3)
    """
    img = sample_image(size, dtype)
    items = []
    for b in range(batch):
        item = np.rot90(img, k=b % 4, axes=(0, 1))
        if (b // 4) % 2:
            item = item[:, ::-1]
        items.append(item)
    return np.ascontiguousarray(np.stack(items))
