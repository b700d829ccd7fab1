"""Open and write volumes the way users keep them (zarr 2).

Reading (:func:`open_volume`) accepts

- an OME-NGFF 0.4 multiscale group: ``multiscales[0]`` lists the levels
  (``datasets``), each with ``coordinateTransformations``
  ``[{type: scale, scale}, {type: translation, translation}]``, optionally
  followed by a transform of the whole multiscale (applied after the level's:
  ``world = top_scale * (scale * index + translation) + top_translation``);
- an array with funlib attributes ``voxel_size`` (or ``resolution``) and
  ``offset`` (0 when absent), or, without ``offset``, the challenge's
  ``translation`` (both present must agree);
- a level array of a multiscale group (e.g. ``.../mito/s0``) without funlib
  attributes: its transforms are read from the parent group.

An array with no voxel-size metadata is refused, never read at voxel size 1.
Spatial axes (OME type ``"space"``) may be preceded by one channel axis (OME
type ``"channel"``, funlib axis name ending in ``^`` such as ``c^``): what
this project writes for targets, weights and predictions. Time axes, or a
channel axis elsewhere, are refused.

Conventions:

- A translation (funlib's ``offset``) is the world position of the corner of
  the first voxel, as funlib and cellmap-data read it.
- With a training voxel size ``V``, a multiscale level is chosen: the level at
  ``V`` if there is one, else the coarsest level finer than ``V`` by integer
  factors on every axis, else the finest level coarser than (or mixed with)
  ``V`` by integer factors. Among the level at ``V`` and the finer ones, those
  that need no move (below) come first, so a level is moved only when none at
  or finer than ``V`` can be resampled in place. No
  level at an integer ratio is an error naming the dataset, its voxel sizes
  and ``V``.
- Off-grid translations: with ``V`` given, the offset is moved to the nearest
  multiple of the dataset's voxel size on axes where that is finer than (or
  equal to) ``V``, of ``V`` on the others (ties move down). The move is at most
  half a training voxel; a non-zero move is reported with an
  :class:`OffGridWarning` naming the dataset and the shift in world units.
  (CellMap's coarser levels carry half-voxel translations, e.g. ``s1`` at
  16 nm translated by 4 nm.)

Writing is :mod:`gp_hotdistance.data.write`'s, whose outputs
:func:`open_volume` reads. The :class:`~gp_hotdistance.data.volume.Volume`
returned reads, pads and writes in world units.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence

import numpy as np
import zarr
from funlib.geometry import Coordinate

from gp_hotdistance.data.volume import Volume


class OffGridWarning(UserWarning):
    """A dataset's offset was moved onto the grid it is resampled from."""


def open_volume(path: str | os.PathLike, voxel_size: Sequence[int] | None = None) -> Volume:
    """Open ``path`` (a multiscale group or an array, see the module docs).

    Args:
        path: the group or array, e.g. ``"jrc_x.zarr/recon-1/em/fibsem-uint8"``.
        voxel_size: the training voxel size ``V``; chooses the multiscale level
            and snaps an off-grid offset. ``None`` takes the first (finest)
            level as it is.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: no voxel-size metadata, axes other than spatial ones
            after at most one channel axis, non-integer voxel sizes,
            dimensions other than ``voxel_size``'s, or no level at an integer
            ratio to ``voxel_size``.
    """
    name = str(path)
    node, levels, channels = _read_levels(name)
    target = None if voxel_size is None else Coordinate(voxel_size)
    levels = [(p, _integer_voxel_size(f"{name}/{p}" if p else name, v), t) for p, v, t in levels]
    if target is not None:
        _check_dims(name, levels[0][1], target)
    if isinstance(node, zarr.Group) and target is not None:
        level = _choose_level(name, levels, target)
    else:
        level = levels[0]
    level_path, scale, translation = level
    name, array = _level_array(name, node, level_path)
    _check_spatial_array(name, array, scale, channels)
    offset = _place(name, scale, translation, target)
    return Volume(name, scale, offset, channels, array=array)


def read_placement(
    path: str | os.PathLike,
) -> tuple[zarr.Array, tuple[float, ...], tuple[float, ...], int]:
    """The array at ``path`` (a multiscale group's first level), its voxel
    size and translation as stored (floats: the challenge's crops have voxel
    sizes such as 1.74 nm) and its number of leading channel axes: the
    metadata :func:`open_volume` reads, before it requires integer voxel
    sizes and offsets.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: as :func:`open_volume`, but for non-integer placements.
    """
    name = str(path)
    node, levels, channels = _read_levels(name)
    level_path, scale, translation = levels[0]
    name, array = _level_array(name, node, level_path)
    _check_spatial_array(name, array, scale, channels)
    return array, scale, translation, channels


def _read_levels(name: str) -> tuple[zarr.Array | zarr.Group, list[_Level], int]:
    """The node at ``name``, its levels ``(path, voxel size, translation)``
    (spatial axes, as stored; a plain array is one level, path ``""``) and
    its number of leading channel axes."""
    node = _open_node(name)
    if isinstance(node, zarr.Group):
        if "multiscales" not in node.attrs:
            raise ValueError(f"{name} is a zarr group without OME-NGFF 'multiscales' metadata")
        levels, channels = _levels(name, node.attrs.asdict())
        return node, levels, channels
    scale, translation, channels = _array_transform(name, node)
    return node, [("", scale, translation)], channels


def _level_array(
    name: str, node: zarr.Array | zarr.Group, level_path: str
) -> tuple[str, zarr.Array]:
    """The name and array of level ``level_path`` of group ``node`` (of a
    plain array, ``level_path`` ``""``: the array itself)."""
    if not level_path:
        return name, node
    if level_path not in node:
        raise FileNotFoundError(f"{name}: multiscale level {level_path!r} does not exist")
    return f"{name}/{level_path}", node[level_path]


def _check_dims(name: str, voxel_size: Sequence[int], target: Coordinate) -> None:
    if len(voxel_size) != target.dims:
        raise ValueError(
            f"{name} has {len(voxel_size)} spatial dimensions (voxel size "
            f"{tuple(voxel_size)}), but the training voxel size {tuple(target)} has "
            f"{target.dims}: a {target.dims}-D config cannot read {len(voxel_size)}-D data"
        )


def _check_json_files(folder: str) -> None:
    """Raise ``ValueError`` naming the file if one of the zarr metadata files
    in ``folder`` is not valid JSON."""
    for meta in (".zarray", ".zgroup", ".zattrs"):
        path = os.path.join(folder, meta)
        if os.path.isfile(path):
            try:
                with open(path, "rb") as file:
                    json.loads(file.read())
            except (ValueError, UnicodeDecodeError) as error:
                raise ValueError(f"{path} is not valid JSON: {error}") from None


def _open_node(name: str) -> zarr.Array | zarr.Group:
    if not os.path.exists(name):
        raise FileNotFoundError(f"dataset {name} does not exist")
    _check_json_files(name)
    try:
        return zarr.open(name, mode="r")
    except (zarr.errors.PathNotFoundError, ValueError) as error:
        raise FileNotFoundError(f"{name} is not a zarr array or group: {error}") from None


_Level = tuple[str, tuple[float, ...], tuple[float, ...]]


def _levels(name: str, attrs: dict) -> tuple[list[_Level], int]:
    """``(path, voxel size, translation)`` of every level of a multiscale
    (spatial axes only) and the number of leading channel axes (0 or 1);
    the metadata is checked (types, lengths, finite numbers), and an error
    names the group and the field."""
    multiscales = attrs["multiscales"]
    if not isinstance(multiscales, list) or not multiscales or not isinstance(multiscales[0], dict):
        raise ValueError(
            f"{name}: 'multiscales' must be a non-empty list of objects, got {multiscales!r}"
        )
    multiscale = multiscales[0]
    axes = multiscale.get("axes")
    channels = 0
    if axes is not None:
        if not isinstance(axes, list) or not all(isinstance(a, (dict, str)) for a in axes):
            raise ValueError(f"{name}: 'axes' must be a list of axis objects, got {axes!r}")
        types = [a.get("type") if isinstance(a, dict) else _axis_type(a) for a in axes]
        channels = 1 if types[:1] == ["channel"] else 0
        if any(t != "space" for t in types[channels:]):
            names = [a.get("name") if isinstance(a, dict) else a for a in axes]
            raise ValueError(
                f"{name}: only spatial axes after at most one leading channel axis are "
                f"supported, got axes {names} of types {types}"
            )
    top_scale, top_translation = _transforms(name, multiscale.get("coordinateTransformations"))
    datasets = multiscale.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise ValueError(f"{name}: 'multiscales' lists no datasets (got {datasets!r})")
    levels = []
    for dataset in datasets:
        path = dataset.get("path") if isinstance(dataset, dict) else None
        if not isinstance(path, str) or not _relative_inside(path):
            raise ValueError(
                f"{name}: a multiscale dataset needs a 'path' inside the group, got {dataset!r}"
            )
        where = f"{name}/{path}"
        scale, translation = _transforms(where, dataset.get("coordinateTransformations"))
        if scale is None:
            raise ValueError(f"{where}: no 'scale' coordinate transformation")
        dims = len(scale)  # every axis, channels included
        for field, values in (
            ("translation", translation),
            ("multiscale scale", top_scale),
            ("multiscale translation", top_translation),
            ("axes", axes),
        ):
            if values is not None and len(values) != dims:
                raise ValueError(
                    f"{where}: {field} {list(values)} has {len(values)} entries, but the "
                    f"scale {list(scale)} has {dims}"
                )
        translation = translation or (0.0,) * dims
        if top_scale is not None:
            translation = tuple(s * t for s, t in zip(top_scale, translation, strict=True))
            scale = tuple(s * t for s, t in zip(top_scale, scale, strict=True))
        if top_translation is not None:
            translation = tuple(t + u for t, u in zip(translation, top_translation, strict=True))
        scale, translation = scale[channels:], translation[channels:]  # spatial axes
        levels.append((path, scale, translation))
    return levels, channels


def _relative_inside(path: str) -> bool:
    """Whether ``path`` is a non-empty relative path that stays inside its group."""
    parts = path.replace("\\", "/").split("/")
    return bool(path) and not path.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def _finite_list(where: str, field: str, value: object) -> tuple[float, ...]:
    """``value`` as a tuple of finite floats; anything else (a string such
    as ``"48"``, ``null``, booleans, NaN, infinities, nested lists) is a
    ``ValueError`` naming ``where`` and ``field``."""
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{where}: {field} must be a non-empty list of numbers, got {value!r}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{where}: {field} must hold finite numbers, got {value!r}")
    return tuple(float(v) for v in value)


def _axis_type(axis_name: str) -> str:
    """OME-NGFF 0.3 axes are bare names."""
    return {"t": "time", "c": "channel"}.get(axis_name, "space")


def _transforms(
    name: str, transforms: object
) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    if transforms is None:
        return None, None
    if not isinstance(transforms, list) or not all(isinstance(t, dict) for t in transforms):
        raise ValueError(
            f"{name}: coordinateTransformations must be a list of objects, got {transforms!r}"
        )
    scale = translation = None
    for transform in transforms:
        kind = transform.get("type")
        if kind == "scale" and "scale" in transform:
            scale = _finite_list(name, "scale", transform["scale"])
        elif kind == "translation" and "translation" in transform:
            translation = _finite_list(name, "translation", transform["translation"])
        elif kind != "identity":
            raise ValueError(f"{name}: unsupported coordinate transformation {transform}")
    if scale is not None and translation is not None and len(scale) != len(translation):
        raise ValueError(
            f"{name}: translation {list(translation)} has {len(translation)} entries, but the "
            f"scale {list(scale)} has {len(scale)}"
        )
    return scale, translation


def _integer_voxel_size(where: str, scale: Sequence[float]) -> Coordinate:
    if any(s <= 0 or s != int(s) for s in scale):
        raise ValueError(f"{where}: voxel size {tuple(scale)} is not a positive integer per axis")
    return Coordinate(int(s) for s in scale)


def _choose_level(name: str, levels: list[_Level], target: Coordinate) -> _Level:
    """The level to resample to ``target``, by integer factors per axis: the
    level at ``target``, else the coarsest finer one, else the finest coarser
    (or mixed) one; among the level at ``target`` and the finer ones, those
    whose translation needs no move come first (CellMap's coarser levels are
    translated by half a finer voxel), so a level is moved only when no level
    at or finer than ``target`` can be resampled in place."""
    usable = [lvl for lvl in levels if _integer_ratio(lvl[1], target)]
    if not usable:
        raise ValueError(
            f"{name}: no multiscale level has an integer ratio to the training voxel size "
            f"{target}; level voxel sizes are {[tuple(lvl[1]) for lvl in levels]}"
        )
    at = [lvl for lvl in usable if lvl[1] == target]
    finer = [
        lvl
        for lvl in usable
        if lvl[1] != target and all(v <= t for v, t in zip(lvl[1], target, strict=True))
    ]
    finer.sort(key=lambda lvl: -np.prod(lvl[1]))  # coarsest first
    ordered = at + finer
    if ordered:
        on_grid = [lvl for lvl in ordered if _on_grid(lvl, target)]
        return (on_grid or ordered)[0]
    return min(usable, key=lambda lvl: np.prod(lvl[1]))


def _on_grid(level: _Level, target: Coordinate) -> bool:
    """Whether ``level``'s translation needs no move to be resampled to ``target``."""
    _, voxel_size, translation = level
    return all(
        t % (v if v <= g else g) == 0
        for t, v, g in zip(translation, voxel_size, target, strict=True)
    )


def _integer_ratio(voxel_size: Coordinate, target: Coordinate) -> bool:
    if len(voxel_size) != len(target):
        return False
    return all(t % v == 0 or v % t == 0 for v, t in zip(voxel_size, target, strict=True))


def _array_transform(
    name: str, array: zarr.Array
) -> tuple[tuple[float, ...], tuple[float, ...], int]:
    """Voxel size, translation and number of leading channel axes of a plain
    array: funlib attributes (channel axes named ``...^``), else the parent
    group's multiscale entry for this array."""
    attrs = array.attrs.asdict()
    key = "voxel_size" if "voxel_size" in attrs else "resolution"
    if key in attrs:
        voxel_size = _finite_list(name, key, attrs[key])
        offset, field = _array_offset(name, attrs)
        offset = offset or (0.0,) * len(voxel_size)
        if len(offset) != len(voxel_size):
            raise ValueError(
                f"{name}: {field} {list(offset)} and {key} {list(voxel_size)} differ in length"
            )
        names = attrs.get("axis_names") or []
        if names:
            channels = 1 if str(names[0]).endswith("^") else 0
        else:  # funlib's own reader takes leading extra axes as channels
            channels = 1 if array.ndim == len(voxel_size) + 1 else 0
        return voxel_size, offset, channels
    parent, _, level = name.rstrip("/").replace(os.sep, "/").rpartition("/")
    if parent and os.path.exists(os.path.join(parent, ".zattrs")):
        _check_json_files(parent)
        group = zarr.open(parent, mode="r")
        if isinstance(group, zarr.Group) and "multiscales" in group.attrs:
            levels, channels = _levels(parent, group.attrs.asdict())
            for path, scale, translation in levels:
                if path == level:
                    return scale, translation, channels
    raise ValueError(
        f"{name} has no voxel-size metadata (no 'voxel_size'/'resolution' attribute "
        "and no OME-NGFF multiscales entry); refusing to assume voxel size 1"
    )


def _array_offset(name: str, attrs: dict) -> tuple[tuple[float, ...] | None, str]:
    """A plain array's ``offset`` attribute, else its ``translation`` (the
    challenge's name for it), and which one was read; both present and
    different is ambiguous, a ``ValueError``."""
    offset, translation = attrs.get("offset"), attrs.get("translation")
    if offset is not None:
        offset = _finite_list(name, "offset", offset)
    if translation is not None:
        translation = _finite_list(name, "translation", translation)
        if offset is not None and offset != translation:
            raise ValueError(
                f"{name}: attributes offset {list(offset)} and translation "
                f"{list(translation)} differ; which one places the array is ambiguous"
            )
        if offset is None:
            return translation, "translation"
    return offset, "offset"


def _check_spatial_array(
    name: str, array: zarr.Array, voxel_size: Coordinate, channels: int
) -> None:
    if array.ndim != len(voxel_size) + channels:
        raise ValueError(
            f"{name}: array has {array.ndim} axes but its voxel size {tuple(voxel_size)} "
            f"has {len(voxel_size)}"
            + (f" after {channels} channel axis" if channels else "")
            + "; only spatial axes after at most one leading channel axis are supported"
        )
    if len(voxel_size) not in (2, 3):
        raise ValueError(f"{name}: {len(voxel_size)} spatial axes, expected 2 or 3")


def _place(
    name: str, voxel_size: Coordinate, translation: Sequence[float], target: Coordinate | None
) -> Coordinate:
    """The offset: ``translation`` itself without ``target``, else moved to
    the nearest resampling grid position (see module docs)."""
    if target is None:
        if any(t != int(t) for t in translation):
            raise ValueError(f"{name}: translation {tuple(translation)} is not integer")
        return Coordinate(int(t) for t in translation)
    if not _integer_ratio(voxel_size, target):
        raise ValueError(
            f"{name}: voxel size {tuple(voxel_size)} is not an integer multiple or "
            f"divisor of the training voxel size {tuple(target)} on every axis"
        )
    offset = []
    for t, v, g in zip(translation, voxel_size, target, strict=True):
        grid = v if v <= g else g
        q, r = divmod(t, grid)
        offset.append(int(grid * (q + 1 if 2 * r > grid else q)))
    offset = Coordinate(offset)
    shift = tuple(o - t for o, t in zip(offset, translation, strict=True))
    if any(shift):
        shift = _numbers(shift)
        warnings.warn(
            f"{name}: translation {_numbers(translation)} is off the grid of voxel size "
            f"{tuple(voxel_size)} / training voxel size {tuple(target)}; moved by {shift} "
            f"(world units) to offset {tuple(offset)}",
            OffGridWarning,
            stacklevel=3,
        )
    return offset


def _numbers(values: Sequence[float]) -> tuple[float, ...]:
    """``values`` with integral floats shown as ints (for messages)."""
    return tuple(int(v) if v == int(v) else v for v in values)


__all__ = ["OffGridWarning", "Volume", "open_volume", "read_placement"]
