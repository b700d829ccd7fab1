"""Write volumes the way :func:`~gp_hotdistance.data.open_volume` reads them (zarr 2).

:func:`write_volume` and :func:`prepare_volume` make an OME-NGFF 0.4
single-level multiscale group ``name/`` with the array ``name/s0``, which also
carries funlib attributes, so that ``zarr.open_group`` (at the root and every
group), OME-NGFF readers, ``funlib.persistence.open_ds(".../name/s0")`` and
:func:`~gp_hotdistance.data.open_volume` all read the same voxel size, offset
and (optional, leading) channel axis.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import zarr

SPATIAL_AXIS_NAMES = ("z", "y", "x")


def prepare_volume(
    root_or_group: str | os.PathLike | zarr.Group,
    name: str,
    shape: Sequence[int],
    dtype: npt.DTypeLike,
    voxel_size: Sequence[int],
    offset: Sequence[int],
    axis_names: Sequence[str] | None = None,
    units: str | Sequence[str] = "nm",
    channel_axis: bool = False,
    chunks: Sequence[int] | None = None,
    fill_value: float | int = 0,
) -> zarr.Array:
    """Create (or replace) the empty OME-NGFF 0.4 multiscale group ``name/``
    with array ``name/s0`` of ``shape`` (channel axis first when
    ``channel_axis``), for writers that fill it block by block. Returns
    ``name/s0``. ``axis_names`` and ``units`` are for the spatial axes
    (default ``z, y, x`` trailing names and ``"nm"``)."""
    voxel_size = tuple(int(v) for v in voxel_size)
    offset = tuple(int(o) for o in offset)
    dims = len(voxel_size)
    if len(offset) != dims:
        raise ValueError(f"{name}: offset {offset} and voxel size {voxel_size} differ in length")
    if len(shape) != dims + int(channel_axis):
        raise ValueError(
            f"{name}: shape {tuple(shape)} does not have {dims} spatial axes"
            + (" after the channel axis" if channel_axis else "")
        )
    if dims > len(SPATIAL_AXIS_NAMES) and axis_names is None:
        raise ValueError(f"{name}: give axis_names for {dims} spatial axes")
    axis_names = tuple(axis_names or SPATIAL_AXIS_NAMES[-dims:])
    units = (units,) * dims if isinstance(units, str) else tuple(units)
    if len(axis_names) != dims or len(units) != dims:
        raise ValueError(
            f"{name}: axis_names {axis_names} and units {units} need {dims} entries each"
        )
    root = (
        root_or_group
        if isinstance(root_or_group, zarr.Group)
        else zarr.open_group(str(root_or_group), mode="a")
    )
    group = root
    for part in name.strip("/").split("/"):
        group = group.require_group(part)
    axes = [{"name": n, "type": "space", "unit": u} for n, u in zip(axis_names, units, strict=True)]
    scale, translation = list(voxel_size), list(offset)
    if channel_axis:
        axes = [{"name": "c", "type": "channel"}] + axes
        scale, translation = [1] + scale, [0] + translation
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "name": name.strip("/").split("/")[-1],
            "axes": axes,
            "datasets": [
                {
                    "path": "s0",
                    "coordinateTransformations": [
                        {"type": "scale", "scale": scale},
                        {"type": "translation", "translation": translation},
                    ],
                }
            ],
        }
    ]
    array = group.create_dataset(
        "s0",
        shape=tuple(shape),
        dtype=dtype,
        chunks=tuple(chunks) if chunks is not None else True,
        fill_value=fill_value,
        overwrite=True,
        dimension_separator="/",
    )
    array.attrs.update(
        {
            "voxel_size": list(voxel_size),
            "offset": list(offset),
            "axis_names": (["c^"] if channel_axis else []) + list(axis_names),
            "units": list(units),
            "types": (["channel"] if channel_axis else []) + ["space"] * dims,
        }
    )
    return array


def write_volume(
    root_or_group: str | os.PathLike | zarr.Group,
    name: str,
    data: npt.ArrayLike,
    voxel_size: Sequence[int],
    offset: Sequence[int],
    axis_names: Sequence[str] | None = None,
    units: str | Sequence[str] = "nm",
    channel_axis: bool = False,
    chunks: Sequence[int] | None = None,
) -> zarr.Array:
    """Write ``data`` as the OME-NGFF 0.4 multiscale group ``name/`` (array
    ``name/s0``, see :func:`prepare_volume`); returns ``name/s0``."""
    data = np.asarray(data)
    array = prepare_volume(
        root_or_group,
        name,
        data.shape,
        data.dtype,
        voxel_size,
        offset,
        axis_names=axis_names,
        units=units,
        channel_axis=channel_axis,
        chunks=chunks,
    )
    array[...] = data
    return array


__all__ = ["prepare_volume", "write_volume"]
