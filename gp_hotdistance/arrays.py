"""funlib.persistence Arrays over in-memory data (imported where used: dask
and funlib.persistence take seconds to import, and blockwise workers compute
targets from numpy arrays alone)."""

from __future__ import annotations

import uuid
from typing import Any

import dask.array as da
import numpy.typing as npt
from funlib.persistence import Array


class InMemoryArray(Array):
    """A funlib.persistence ``Array`` over an in-memory numpy array that
    keeps a reference to it, so that the predictor reads it back as a view.

    Plain ``Array(ndarray)`` hashes every byte to name its dask array, and
    ``dask.array.from_array`` copies a numpy array; reading a dask-backed
    ``Array`` (``np.asarray``, ``array[roi]``) computes another copy; each
    costs about as much as the kernels. The dask array here is one chunk,
    the numpy array itself (not a copy), under a random name. Used for the
    predictor's outputs; anything else (zarr, dask, lazy ops) is read
    through funlib as usual.
    """

    def __init__(self, data: npt.NDArray, **metadata: Any):
        self.ndarray = data
        name = f"in-memory-{uuid.uuid4().hex}"
        dask_data = da.Array(
            {(name,) + (0,) * data.ndim: data},
            name,
            chunks=tuple((size,) for size in data.shape),
            dtype=data.dtype,
            meta=data[(slice(0, 0),) * data.ndim],
        )
        super().__init__(dask_data, **metadata)
        self.thaw()
        self.dask_data = self.data
        self.freeze()
