"""funlib.persistence Arrays over in-memory data (imported where used: dask
and funlib.persistence take seconds to import, and blockwise workers compute
targets from numpy arrays alone)."""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy.typing as npt
from funlib.persistence import Array


class InMemoryArray(Array):
    """A funlib.persistence ``Array`` over an in-memory numpy array that
    keeps a reference to it, so that the predictor reads it back as a view.

    Plain ``Array(ndarray)`` hashes every byte to name its dask array, and
    reading a dask-backed ``Array`` (``np.asarray``, ``array[roi]``) computes
    a full copy; both cost as much as the kernels. The dask array here is one
    chunk under a random name. Used for the predictor's outputs; anything
    else (zarr, dask, lazy ops) is read through funlib as usual.
    """

    def __init__(self, data: npt.NDArray, **metadata: Any):
        self.ndarray = data
        super().__init__(da.from_array(data, chunks=data.shape, name=False), **metadata)
        self.thaw()
        self.dask_data = self.data
        self.freeze()
