"""One zarr array placed in world units: the project's array type.

:func:`~gp_hotdistance.data.open_volume` makes one from a user's data or an
output of this project; blockwise jobs, samples, the viewer and the scores
read (and blockwise jobs write) through it. A :class:`Volume` pickles as its
path and placement; each process opens the array on first use and keeps it.
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import zarr
from funlib.geometry import Coordinate, Roi

from gp_hotdistance.geometry import relative_slices


class VolumeReadError(RuntimeError):
    """Data of a volume that cannot be decoded (e.g. a corrupt chunk file)."""


class VolumeWriteError(RuntimeError):
    """A write the file system refused (disk full, read-only, file-size limit,
    permissions); ``errno`` is the operating system's error number."""

    def __init__(self, path: str, roi: Roi, error: OSError) -> None:
        super().__init__(
            f"cannot write {path} in {roi}: {error.strerror or error} (errno {error.errno})"
        )
        self.errno = error.errno


@dataclass(frozen=True, init=False)
class Volume:
    """One zarr array placed in world units.

    Attributes:
        path: the array, absolute (for a multiscale group, the level
            array, e.g. ``.../mito/s0``), so that a process started in
            another directory reopens the same array.
        voxel_size: world units per voxel, per spatial axis.
        offset: world position of the first voxel's corner.
        channels: how many leading axes are channels (0 or 1), before the
            spatial axes.

    ``array`` (optional) is the array at ``path`` already opened read-only.
    The former order ``Volume(path, array, voxel_size, offset, channels)``
    still works, with a ``DeprecationWarning``.
    """

    path: str
    voxel_size: Coordinate
    offset: Coordinate
    channels: int = 0
    _arrays: dict[str, zarr.Array] = field(repr=False, compare=False, hash=False)

    def __init__(
        self,
        path: str,
        voxel_size: Sequence[int],
        offset: Sequence[int],
        channels: int = 0,
        array: zarr.Array | None = None,
    ) -> None:
        if isinstance(voxel_size, zarr.Array):  # Volume(path, array, voxel_size, offset, ...)
            warnings.warn(
                "Volume(path, array, voxel_size, offset, channels) is deprecated: use "
                "Volume(path, voxel_size, offset, channels, array=array) or open_volume(path)",
                DeprecationWarning,
                stacklevel=2,
            )
            array, voxel_size, offset, channels = (
                voxel_size,
                offset,
                channels,
                0 if array is None else array,
            )
        object.__setattr__(self, "path", os.path.abspath(path))
        object.__setattr__(self, "voxel_size", Coordinate(voxel_size))
        object.__setattr__(self, "offset", Coordinate(offset))
        object.__setattr__(self, "channels", int(channels))
        object.__setattr__(self, "_arrays", {} if array is None else {"r": array})

    def __getstate__(self) -> dict[str, Any]:
        """Pickled as path and placement; the array is reopened on first use."""
        state = dict(self.__dict__)
        state["_arrays"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, value)

    def open(self, mode: str = "r") -> zarr.Array:
        """The zarr array, opened in ``mode`` (``"r"`` or ``"r+"``) once per process."""
        if mode not in self._arrays:
            self._arrays[mode] = zarr.open_array(self.path, mode=mode)
        return self._arrays[mode]

    @property
    def array(self) -> zarr.Array:
        """The zarr array, read-only: ``channels`` leading axes, then spatial ones."""
        return self.open("r")

    @property
    def roi(self) -> Roi:
        """The world ROI the array covers."""
        return Roi(self.offset, Coordinate(self.shape[self.channels :]) * self.voxel_size)

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    @property
    def units(self) -> tuple[str, ...]:
        """The spatial axes' units as the array's attributes state them
        (``()`` when they do not)."""
        return tuple(self.array.attrs.get("units") or ())

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    def slices(self, roi: Roi) -> tuple[slice, ...]:
        """Index of world ``roi`` (inside :attr:`roi`, on this volume's voxel
        grid, which starts at :attr:`offset`), every channel included.

        Raises:
            ValueError: ``roi`` leaves the volume or is off its grid.
        """
        if not self.roi.contains(roi):
            raise ValueError(f"{self.path}: ROI {roi} is not inside the dataset's ROI {self.roi}")
        begin = roi.begin - self.offset
        if any(b % v for b, v in zip(begin, self.voxel_size, strict=True)) or any(
            s % v for s, v in zip(roi.shape, self.voxel_size, strict=True)
        ):
            raise ValueError(
                f"{self.path}: ROI {roi} is not on the dataset's voxel grid "
                f"(offset {self.offset}, voxel size {self.voxel_size})"
            )
        spatial = ((roi - self.offset) / self.voxel_size).to_slices()
        return (slice(None),) * self.channels + spatial

    def read(self, roi: Roi) -> npt.NDArray:
        """The voxels of world ``roi`` (see :meth:`slices`), every channel, as
        a numpy array; reads only those chunks.

        Raises:
            ValueError: ``roi`` leaves the volume or is off its grid.
            VolumeReadError: a chunk cannot be decoded; names its file.
        """
        index = self.slices(roi)
        array = self.array
        try:
            return array[index]
        except Exception as error:
            raise VolumeReadError(
                f"cannot read {self.path} in {roi}: {self._bad_chunk(array, index)}: "
                f"{type(error).__name__}: {error}"
            ) from error

    def read_padded(self, roi: Roi) -> npt.NDArray:
        """As :meth:`read`, with zeros where ``roi`` (on the volume's grid)
        leaves the volume."""
        shape = self.shape[: self.channels] + tuple(roi.shape / self.voxel_size)
        out = np.zeros(shape, dtype=self.dtype)
        inside = roi.intersect(self.roi)
        if not inside.empty:
            where = (slice(None),) * self.channels + relative_slices(inside, roi, self.voxel_size)
            out[where] = self.read(inside)
        return out

    def write(self, roi: Roi, data: npt.ArrayLike) -> None:
        """Write ``data`` (every channel) over world ``roi`` (see :meth:`slices`).

        Raises:
            ValueError: ``roi`` leaves the volume or is off its grid.
            VolumeWriteError: the file system refused the write.
        """
        index = self.slices(roi)
        try:
            self.open("r+")[index] = data
        except OSError as error:
            raise VolumeWriteError(self.path, roi, error) from error

    def _bad_chunk(self, array: zarr.Array, index: tuple[slice, ...]) -> str:
        """The file of the first chunk in ``index`` that fails to decode."""
        ranges = [
            range((s.start or 0) // c, -(-(n if s.stop is None else s.stop) // c))
            for s, c, n in zip(index, array.chunks, array.shape, strict=True)
        ]
        separator = getattr(array, "_dimension_separator", None) or "."
        for chunk in itertools.product(*ranges):
            where = tuple(
                slice(i * c, (i + 1) * c) for i, c in zip(chunk, array.chunks, strict=True)
            )
            try:
                array[where]
            except Exception:
                return f"chunk file {Path(self.path) / separator.join(map(str, chunk))}"
        return "a chunk could not be read"


__all__ = ["Volume", "VolumeReadError", "VolumeWriteError"]
