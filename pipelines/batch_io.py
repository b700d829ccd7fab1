"""Batches as named arrays and their writer: the previews' and the
training snapshots' ``raw``, ``gt/<c>``, ``mask/<c>``, ``target/hot_<c>``,
``target/dist_<c>``, ``weights/...``, ``distance_mask/dist_<c>`` (and
``prediction/...``), each written as an OME-NGFF group at its world offset.
A container is written only where no symbolic link leads elsewhere
(:func:`refuse_links`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import gunpowder as gp
import numpy as np
import torch
from funlib.geometry import Coordinate

from gp_hotdistance.data import write_volume
from gp_hotdistance.predictor import target_channel_names
from pipelines.config import Config, ConfigError

if TYPE_CHECKING:
    from pipelines.batches import Keys

SPATIAL_AXES = {2: ["y", "x"], 3: ["z", "y", "x"]}


@dataclass(frozen=True)
class BatchArray:
    """One channel (or channel-less array) of one sample of a batch, at the
    world offset where it was read."""

    name: str
    data: np.ndarray
    offset: Coordinate
    voxel_size: Coordinate


def batch_arrays(
    batch: gp.Batch, keys: Keys, config: Config, index: int = 0, extra: dict | None = None
) -> list[BatchArray]:
    """Split sample ``index`` of a stacked batch into named channels:
    ``raw``, ``gt/<c>``, ``mask/<c>``, ``target/hot_<c>``, ``target/dist_<c>``,
    ``weights/hot_<c>``, ``weights/dist_<c>``, ``distance_mask/dist_<c>`` (and
    ``extra``: ``{key: (name, channel names)}``). Offsets are world offsets:
    the request's ROI plus the batch's random shift."""
    channels = list(config.channels)
    names = target_channel_names(channels)
    hot, dist = list(names[: len(channels)]), list(names[len(channels) :])
    layout = [
        (keys.raw, "raw", None),
        (keys.gt, "gt", channels),
        (keys.mask, "mask", channels),
        (keys.target, "target", hot + dist),
        (keys.weights, "weights", hot + dist),
        (keys.distance_mask, "distance_mask", dist),
    ]
    layout += [(key, name, names) for key, (name, names) in (extra or {}).items()]
    shift = Coordinate(np.asarray(batch[keys.random_shift].data)[index])
    arrays = []
    for key, name, names in layout:
        if key is None or key not in batch:
            continue
        array = batch[key]
        spec = array.spec
        dims = spec.voxel_size.dims
        data = np.asarray(array.data)[index]
        data = data.reshape((-1,) + data.shape[-dims:])
        offset = spec.roi.offset + shift
        if names is None:
            if data.shape[0] != 1:
                raise ValueError(f"{name} has {data.shape[0]} channels, expected 1")
            arrays.append(BatchArray(name, data[0], offset, spec.voxel_size))
            continue
        if data.shape[0] != len(names):
            raise ValueError(f"{name} has {data.shape[0]} channels, expected {names}")
        for channel, values in zip(names, data, strict=True):
            arrays.append(BatchArray(f"{name}/{channel}", values, offset, spec.voxel_size))
    return arrays


def item_arrays(
    config: Config,
    batch: dict[str, torch.Tensor],
    voxel_size: Coordinate,
    context: Coordinate,
    index: int = 0,
) -> list[BatchArray]:
    """Split sample ``index`` of a :class:`HotDistanceDataset` batch into the
    named channels of :func:`batch_arrays` (``weights`` and ``prediction``
    too when the batch holds them; ``distance_mask`` only with
    ``mask_distances``). Raw starts ``context`` voxels before the batch's
    ``offset``, the world offset of everything else."""
    channels = list(config.channels)
    names = target_channel_names(channels)
    hot, dist = list(names[: len(channels)]), list(names[len(channels) :])
    layout = [
        ("raw", None),
        ("gt", channels),
        ("mask", channels),
        ("target", hot + dist),
        ("weights", hot + dist),
        ("prediction", hot + dist),
    ]
    if config.mask_distances:
        layout.append(("distance_mask", dist))
    offset = Coordinate(batch["offset"][index].tolist())
    arrays = []
    for name, names in layout:
        if name not in batch:
            continue
        data = batch[name][index].detach().cpu().numpy()
        if names is None:
            arrays.append(BatchArray(name, data[0], offset - context * voxel_size, voxel_size))
            continue
        for channel, values in zip(names, data, strict=True):
            arrays.append(BatchArray(f"{name}/{channel}", values, offset, voxel_size))
    return arrays


def write_batch(container: Path, group: str, arrays: list[BatchArray]) -> list[str]:
    """Write each array with the data layer's writer as the OME-NGFF group
    ``container/group/name`` (``container/name`` if ``group`` is empty; level ``s0``, funlib attributes too); returns
    the group names written."""
    written = []
    for array in arrays:
        name = f"{group}/{array.name}" if group else array.name
        write_volume(
            container,
            name,
            array.data,
            array.voxel_size,
            array.offset,
            axis_names=SPATIAL_AXES[array.voxel_size.dims],
        )
        written.append(name)
    return written


def refuse_links(root: str | Path, *names: str) -> Path:
    """``root/names[0]/.../names[-1]`` to write a container at, refused where
    it, a folder between ``root`` and it, or anything already inside it is a
    symbolic link: zarr follows links, so a link planted in a run's folder
    would send its writes elsewhere. ``root`` itself may be a link.

    Raises:
        ConfigError: naming the link (nothing was written through it).
    """
    path = Path(root, *names)
    links = [p for p in (Path(root, *names[: i + 1]) for i in range(len(names))) if p.is_symlink()]
    if not links:
        for folder, dirs, files in os.walk(path):  # does not follow links
            links += [Path(folder, n) for n in dirs + files if os.path.islink(Path(folder, n))]
    if links:
        raise ConfigError(
            f"refusing to write {path}: {links[0]} is a symbolic link, which this project "
            "did not create; remove it (nothing was written through it)"
        )
    return path
