"""What the viewer shows: the layers found under the paths it is given.

Every dataset is read with :func:`gp_hotdistance.data.open_volume` (an
OME-NGFF multiscale group's first level, or an array with funlib attributes,
placed by ``offset`` or the challenge's ``translation``); one without
voxel-size metadata is skipped with a printed note. A :class:`Layer` is one
channel of such a :class:`~gp_hotdistance.data.Volume` with its layer name,
its role (:func:`layer_role`, by name; arrays of 32- or 64-bit unsigned ids
are segmentations whatever their name), its spatial axis names and units.
:mod:`pipelines.view` turns layers into neuroglancer state; its docstring
describes the paths, batch choice and channel names.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from funlib.geometry import Coordinate

from gp_hotdistance.data import Volume, open_volume
from gp_hotdistance.predictor import target_channel_names

DEFAULT_AXES = {2: ("y", "x"), 3: ("z", "y", "x")}
DEFAULT_UNIT = "nm"  # what this project writes; used where a container states no unit
OME_UNITS = {"nanometer": "nm", "micrometer": "um", "millimeter": "mm", "meter": "m"}
BATCH_NAME = re.compile(r"batch_(\d+)(\.zarr)?$")


class ViewError(Exception):
    """A path that cannot be shown (missing, nothing viewable, bad batch)."""


@dataclass(frozen=True)
class Layer:
    """One layer to show: a channel of a volume placed in world units."""

    name: str  # layer name
    role: str  # layer_role of the dataset path inside its container
    volume: Volume  # the array, its voxel size and offset
    data: Channel  # the channel's shape, dtype, numpy slicing
    axis_names: tuple[str, ...]  # spatial axes
    units: tuple[str, ...]
    container: str = ""  # name prefix where several containers are shown

    @property
    def voxel_size(self) -> Coordinate:
        return self.volume.voxel_size

    @property
    def offset(self) -> Coordinate:
        """World position of the first voxel's corner."""
        return self.volume.offset


class Channel:
    """Lazy view of ``array[index]`` (leading channel axes), optionally cast."""

    def __init__(self, array: zarr.Array, index: tuple[int, ...], dtype: np.dtype | None = None):
        self.array = array
        self.index = index
        self.shape = array.shape[len(index) :]
        self.dtype = np.dtype(dtype if dtype is not None else array.dtype)

    def __getitem__(self, item: Any) -> np.ndarray:
        item = item if isinstance(item, tuple) else (item,)
        return np.asarray(self.array[self.index + item]).astype(self.dtype, copy=False)


# ---------------------------------------------------------------- finding data


def note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def _is_zarr(path: Path) -> bool:
    """A zarr container, group or array (funlib writes arrays without parent groups)."""
    return path.suffix == ".zarr" or any(
        (path / marker).exists() for marker in (".zgroup", ".zarray", ".zattrs")
    )


def _attrs(path: Path) -> dict[str, Any]:
    attrs = path / ".zattrs"
    return json.loads(attrs.read_text()) if attrs.exists() else {}


def _pick_batch(names: Sequence[str], batch: int | None, where: str) -> list[str]:
    """Keep non-batch names and one ``batch_<N>`` name: ``--batch`` or the newest."""
    batches = {int(m.group(1)): n for n in names if (m := BATCH_NAME.match(n))}
    others = [n for n in names if not BATCH_NAME.match(n)]
    if not batches:
        return others
    if batch is None:
        batch = max(batches)
    elif batch not in batches:
        raise ViewError(
            f"--batch {batch}: no batch_{batch} in {where} (found batches {sorted(batches)})"
        )
    note(f"showing {batches[batch]} of {where} (batches {sorted(batches)})")
    return [*others, batches[batch]]


def _children(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def find_volumes(path: Path, batch: int | None = None) -> list[Layer]:
    """All viewable layers under ``path``; prints a note for each skipped dataset.

    Layer names are dataset paths relative to ``path`` (or to the chosen
    ``batch_<N>``), prefixed by the container name where several are shown.
    """
    if not path.exists():
        raise ViewError(f"{path} does not exist")
    if not path.is_dir():
        raise ViewError(f"{path} is neither a zarr container nor a directory holding one")
    if any(_is_zarr(p) for p in (path, *path.parents)):  # a container or inside one
        roots = [(path, "")]
    else:
        containers = [name for name in _children(path) if _is_zarr(path / name)]
        if not containers:
            raise ViewError(f"{path} is neither a zarr container nor a directory holding one")
        chosen = _pick_batch(containers, batch, str(path))
        if any(map(BATCH_NAME.match, containers)):
            batch = None  # used at the directory level
        # containers holding batches (preview.zarr) first: their layers are shown
        chosen.sort(key=lambda name: not any(map(BATCH_NAME.match, _children(path / name))))
        roots = [(path / name, Path(name).stem if len(chosen) > 1 else "") for name in chosen]
    volumes: list[Layer] = []
    for root, prefix in roots:
        found = []
        if (root / ".zarray").exists() or "multiscales" in _attrs(root):
            found = _walk(root, root.stem)
        else:
            names = _children(root)
            for name in _pick_batch(names, batch, str(root)):
                found += _walk(root / name, _strip_batch(name))
            if any(map(BATCH_NAME.match, names)):
                batch = None
        volumes += [
            dataclasses.replace(v, name=_join(prefix, v.name), container=prefix) for v in found
        ]
    if batch is not None:
        raise ViewError(f"--batch {batch}: no batch_<N> entries under {path}")
    if not volumes:
        raise ViewError(f"nothing viewable under {path} (no dataset with voxel-size metadata)")
    return volumes


def find_all(paths: Sequence[Path], batch: int | None = None) -> list[Layer]:
    """:func:`find_volumes` of every path, overlaid: with several paths each
    path's layers are prefixed by its name (``name``, ``name_2``, ... if two
    are alike). Arrays of 32- or 64-bit unsigned ids (instances) are
    segmentation layers whatever their name."""
    volumes: list[Layer] = []
    used: set[str] = set()
    for path in paths:
        found = find_volumes(Path(path), batch)
        if len(paths) > 1:
            label = Path(path).name.removesuffix(".zarr") or "data"
            prefix, n = label, 1
            while prefix in used:
                n += 1
                prefix = f"{label}_{n}"
            used.add(prefix)
            found = [
                dataclasses.replace(
                    v, name=_join(prefix, v.name), container=_join(prefix, v.container)
                )
                for v in found
            ]
        volumes += found
    return [
        dataclasses.replace(v, role="segmentation")
        if v.role == "other" and v.data.dtype.kind == "u" and v.data.dtype.itemsize >= 4
        else v
        for v in volumes
    ]


def newest_prediction(volumes: Sequence[Layer]) -> list[Layer]:
    """The layers of the most recently written ``prediction`` dataset."""
    groups: dict[tuple[str, int], list[Layer]] = {}
    for volume in volumes:
        if "prediction" in volume.name.split("/"):
            groups.setdefault((volume.container, id(volume.volume.array)), []).append(volume)
    if not groups:
        return []
    return max(groups.values(), key=lambda group: _written(group[0].volume.array))


def _written(array: zarr.Array) -> float:
    """Modification time of an array's directory (0 where it has none)."""
    root = getattr(array.store, "path", None)
    path = Path(root, array.path) if root else None
    return path.stat().st_mtime if path is not None and path.exists() else 0.0


def _join(prefix: str, name: str) -> str:
    return "/".join(part for part in (prefix, name) if part)


def _strip_batch(name: str) -> str:
    """The chosen ``batch_<N>`` group is the root of the layer names."""
    return "" if BATCH_NAME.match(name) else name


def _walk(path: Path, name: str) -> list[Layer]:
    attrs = _attrs(path)
    if (path / ".zarray").exists() or "multiscales" in attrs:
        return _open(path, attrs, name)
    volumes: list[Layer] = []
    for child in _children(path):
        volumes += _walk(path / child, _join(name, child))
    return volumes


def _open(path: Path, attrs: dict[str, Any], name: str) -> list[Layer]:
    """The layers of one dataset (an array or a multiscale group), or none
    with a printed note where the data layer cannot place it."""
    if "multiscales" not in attrs and not {"voxel_size", "resolution"} & set(attrs):
        note(f"skipping {path}: no voxel_size attribute")
        return []
    try:
        volume = open_volume(path)
    except (ValueError, FileNotFoundError) as error:  # e.g. a multiscale level missing
        note(f"skipping {error}")
        return []
    dims = len(volume.voxel_size)
    if "multiscales" in attrs:  # names and units of the spatial OME axes
        axes = [a for a in attrs["multiscales"][0].get("axes") or () if isinstance(a, dict)]
        names = tuple(a["name"] for a in axes[-dims:])
        units = tuple(OME_UNITS.get(u, u) for u in (a.get("unit") or DEFAULT_UNIT for a in axes))
        units = units[-dims:] or (DEFAULT_UNIT,) * dims
    else:
        names = tuple(attrs.get("axis_names") or ())[-dims:]
        units = tuple(u or DEFAULT_UNIT for u in volume.units or ("",) * dims)[-dims:]
    channel_names = volume.array.attrs.get("channel_names", attrs.get("channel_names"))
    return _split_channels(volume, name, names or DEFAULT_AXES.get(dims), units, channel_names)


def _split_channels(
    volume: Volume,
    name: str,
    axis_names: Sequence[str] | None,
    units: tuple[str, ...],
    channel_names: Sequence[str] | None,
) -> list[Layer]:
    where, dims = volume.path, len(volume.voxel_size)
    if len(units) != dims:
        raise ViewError(f"{where}: units {units} do not match voxel_size {volume.voxel_size}")
    if axis_names is None or len(axis_names) != dims:
        raise ViewError(f"{where}: no names for {dims} spatial axes (axis_names {axis_names})")
    geometry = dict(volume=volume, axis_names=tuple(axis_names), units=units)
    if volume.channels == 0 or volume.shape[0] == 1:
        index = (0,) * volume.channels
        return [Layer(name, layer_role(name), data=Channel(volume.array, index), **geometry)]
    names = _channel_names(name, volume.shape[0], channel_names, where)
    layers = []
    for index, channel in enumerate(names):
        layer = _join(name, channel)
        layers.append(
            Layer(layer, layer_role(layer), data=Channel(volume.array, (index,)), **geometry)
        )
    return layers


def _channel_names(
    name: str, count: int, channel_names: Sequence[str] | None, where: str
) -> list[str]:
    if channel_names is not None:
        if len(channel_names) != count:
            raise ViewError(
                f"{where}: {len(channel_names)} channel_names {list(channel_names)} "
                f"for {count} channels"
            )
        return [str(c) for c in channel_names]
    base = name.rsplit("/", 1)[-1]
    if base in ("target", "weights", "prediction") and count % 2 == 0:
        half = count // 2
        return list(target_channel_names([str(i) for i in range(half)]))
    if base == "distance_mask":
        return [f"dist_{i}" for i in range(count)]
    return [str(i) for i in range(count)]


# ---------------------------------------------------------------- layers


def layer_role(name: str) -> str:
    """``raw``, ``segmentation``, ``distance``, ``unit`` or ``other``, by dataset path.

    The first path component that is a known dataset name decides
    (``eval/gt/0`` is a segmentation).
    """
    parts = name.split("/")
    leaf = parts[-1]
    for top in parts:
        if top in ("raw", "em") or top.startswith("fibsem"):
            return "raw"
        if top.startswith(("gt", "labels", "segmentation")):
            return "segmentation"
        if top in ("target", "prediction") and leaf.startswith("dist"):
            return "distance"
        if (top == "target" and leaf.startswith("hot")) or top.startswith("mask"):
            return "unit"
        if top == "distance_mask":
            return "unit"
        if top in ("target", "prediction", "weights"):
            return "other"
    return "other"
