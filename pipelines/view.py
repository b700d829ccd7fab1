"""Look at a preview, a snapshot or any container this project wrote, in neuroglancer.

``python -m pipelines.view PATH [PATH ...] [--batch N] [--port P] [--state-only]``
serves the arrays under every ``PATH`` (overlaid, each path's layers prefixed
by its name when there are several) from this process with the ``neuroglancer`` Python
package (which ships its own web client: nothing is fetched from outside),
binds to ``127.0.0.1``, prints the viewer URL and stays up until Ctrl-C.
``--state-only`` prints the viewer state as JSON instead and exits.

``PATH`` is a ``.zarr`` container, a group or array inside one, or a directory
holding ``.zarr`` containers (a preview directory, a run's ``snapshots/``).
Where entries are named ``batch_<N>`` (snapshots ``batch_<N>.zarr``, preview
groups ``batch_<N>``), the one with the largest ``N`` is shown, or
``--batch N``.

Every dataset found in the hierarchy becomes layers:

- an OME-NGFF 0.4 group (attribute ``multiscales``) is one image: its first
  dataset, placed by its ``scale`` and ``translation`` transformations;
- an array with funlib attributes (``voxel_size``, optional ``offset`` or the
  challenge's ``translation``, ``axis_names``, ``units``) is one image;
- anything else is skipped with a printed note (voxel size is never assumed).

Leading (channel) axes give one layer per channel, named by the attribute
``channel_names`` where present; otherwise unnamed ``target``, ``weights`` and
``prediction`` arrays with ``2C`` channels are named ``hot_<i>``/``dist_<i>``
(the ``[hot x C, distance x C]`` layout of this package) and other channels by
index. Layer style by name:

- ``raw`` (also ``em``, ``fibsem*``): grayscale image; ``gt*``/``labels*``/
  ``segmentation*``: segmentation (unsigned or boolean data; any other dtype
  is shown as an image, with a note); any other array of 32- or 64-bit
  unsigned ids (instances, e.g. ``blockwise segment``'s ``<class>`` or a
  submission's ``cropN/<label>``) is a segmentation too;
- ``target/dist_*`` (and ``prediction/dist_*``): blue (-1) / white (0) / red
  (+1) diverging shader over ``DISTANCE_RANGE``;
- ``target/hot_*``, ``mask*``, ``distance_mask/*``: coloured over ``[0, 1]``;
  ``weights/*``, ``prediction/hot_*`` and others: grayscale over the value
  range of a central block of at most ``RANGE_SAMPLE_VOXELS`` voxels.

Visible at first: the first raw, every segmentation, the first distance
channel of the most recently written ``prediction`` and the first
container's first distance target. Each layer
keeps its own voxel size and offset (``outputDimensions`` and the translation
of its source transform, in voxels of that size), so positions are in world
units and layers of different offsets and voxel sizes line up.

Errors (missing path, nothing viewable, bad ``--batch``) print a message and
exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import neuroglancer
import numpy as np
import zarr

from gp_hotdistance.predictor import target_channel_names

DISTANCE_RANGE = (-1.0, 1.0)  # tanh-normalised signed distances
UNIT_RANGE = (0.0, 1.0)  # one-hot targets, masks, distance masks
RANGE_SAMPLE_VOXELS = 2**20  # voxels read (central block) for data-driven ranges
DEFAULT_AXES = {2: ("y", "x"), 3: ("z", "y", "x")}
DEFAULT_UNIT = "nm"  # what this project writes; used where a container states no unit
OME_UNITS = {"nanometer": "nm", "micrometer": "um", "millimeter": "mm", "meter": "m"}
FIT_PIXELS = 400  # initial zoom: the first raw's larger side spans this many screen pixels
BATCH_NAME = re.compile(r"batch_(\d+)(\.zarr)?$")

DIVERGING_SHADER = f"""#uicontrol invlerp normalized(range=[{DISTANCE_RANGE[0]}, {DISTANCE_RANGE[1]}])
void main() {{
  float t = clamp(normalized(), 0.0, 1.0);
  vec3 white = vec3(1.0);
  vec3 colour = t < 0.5 ? mix(vec3(0.0, 0.0, 1.0), white, 2.0 * t)
                        : mix(white, vec3(1.0, 0.0, 0.0), 2.0 * t - 1.0);
  emitRGB(colour);
}}
"""
UNIT_SHADER = f"""#uicontrol invlerp normalized(range=[{UNIT_RANGE[0]}, {UNIT_RANGE[1]}])
#uicontrol vec3 colour color(default="#00ff00")
void main() {{
  emitRGB(colour * clamp(normalized(), 0.0, 1.0));
}}
"""
GRAY_SHADER = """#uicontrol invlerp normalized(range=[{low}, {high}])
void main() {{
  emitGrayscale(clamp(normalized(), 0.0, 1.0));
}}
"""


class ViewError(Exception):
    """A path that cannot be shown (missing, nothing viewable, bad batch)."""


@dataclass(frozen=True)
class Volume:
    """One spatial array to show, with its world geometry."""

    name: str  # layer name
    role: str  # layer_role of the dataset path inside its container
    data: _Channel  # shape, dtype, numpy slicing
    voxel_size: tuple[float, ...]
    offset: tuple[float, ...]  # world position of the first voxel's corner
    axis_names: tuple[str, ...]
    units: tuple[str, ...]
    container: str = ""  # name prefix where several containers are shown


class _Channel:
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


def _note(message: str) -> None:
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
    _note(f"showing {batches[batch]} of {where} (batches {sorted(batches)})")
    return [*others, batches[batch]]


def _children(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def find_volumes(path: Path, batch: int | None = None) -> list[Volume]:
    """All viewable volumes under ``path``; prints a note for each skipped dataset.

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
    volumes: list[Volume] = []
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


def find_all(paths: Sequence[Path], batch: int | None = None) -> list[Volume]:
    """:func:`find_volumes` of every path, overlaid: with several paths each
    path's layers are prefixed by its name (``name``, ``name_2``, ... if two
    are alike). Arrays of 32- or 64-bit unsigned ids (instances) are
    segmentation layers whatever their name."""
    volumes: list[Volume] = []
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


def newest_prediction(volumes: Sequence[Volume]) -> list[Volume]:
    """The layers of the most recently written ``prediction`` dataset."""
    groups: dict[tuple[str, int], list[Volume]] = {}
    for volume in volumes:
        if "prediction" in volume.name.split("/"):
            groups.setdefault((volume.container, id(volume.data.array)), []).append(volume)
    if not groups:
        return []
    return max(groups.values(), key=lambda group: _written(group[0].data.array))


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


def _walk(path: Path, name: str) -> list[Volume]:
    if (path / ".zarray").exists():
        return _array_volumes(zarr.open_array(str(path), mode="r"), name, str(path))
    attrs = _attrs(path)
    if "multiscales" in attrs:
        return _ome_volumes(path, attrs, name)
    volumes: list[Volume] = []
    for child in _children(path):
        volumes += _walk(path / child, _join(name, child))
    return volumes


def _array_volumes(array: zarr.Array, name: str, where: str) -> list[Volume]:
    """An array with funlib attributes; leading axes beyond ``voxel_size`` are channels."""
    attrs = dict(array.attrs)
    if "voxel_size" not in attrs:
        _note(f"skipping {where}: no voxel_size attribute")
        return []
    voxel_size = tuple(float(v) for v in attrs["voxel_size"])
    dims = len(voxel_size)
    if array.ndim < dims:
        _note(f"skipping {where}: {array.ndim} axes but voxel_size {voxel_size}")
        return []
    placed = attrs.get("offset") or attrs.get("translation")  # funlib / the challenge's layout
    offset = tuple(float(v) for v in placed or (0,) * dims)
    axis_names = tuple(attrs.get("axis_names") or ())[-dims:] or DEFAULT_AXES.get(dims)
    units = tuple(u or DEFAULT_UNIT for u in attrs.get("units") or ("",) * dims)[-dims:]
    return _split_channels(
        array, name, where, voxel_size, offset, axis_names, units, attrs.get("channel_names")
    )


def _ome_volumes(path: Path, attrs: dict[str, Any], name: str) -> list[Volume]:
    """An OME-NGFF 0.4 multiscale group: its first dataset (``s0``)."""
    where = str(path)
    multiscale = attrs["multiscales"][0]
    axes = multiscale["axes"]
    dataset = multiscale["datasets"][0]
    array = zarr.open_array(str(path / dataset["path"]), mode="r")
    scale = np.ones(len(axes))
    translation = np.zeros(len(axes))
    # dataset transformations first, then the multiscale-level ones
    for transform in dataset["coordinateTransformations"] + multiscale.get(
        "coordinateTransformations", []
    ):
        if transform["type"] == "scale":
            scale, translation = scale * transform["scale"], translation * transform["scale"]
        elif transform["type"] == "translation":
            translation = translation + transform["translation"]
        else:
            _note(f"skipping {where}: transformation type {transform['type']!r}")
            return []
    spatial = [i for i, axis in enumerate(axes) if axis.get("type") == "space"]
    if spatial != list(range(len(axes) - len(spatial), len(axes))):
        _note(f"skipping {where}: spatial axes are not the last axes ({axes})")
        return []
    units = []
    for i in spatial:
        unit = axes[i].get("unit") or DEFAULT_UNIT
        units.append(OME_UNITS.get(unit, unit))
    channel_names = array.attrs.get("channel_names", attrs.get("channel_names"))
    return _split_channels(
        array,
        name,
        f"{where}/{dataset['path']}",
        tuple(float(scale[i]) for i in spatial),
        tuple(float(translation[i]) for i in spatial),
        tuple(axes[i]["name"] for i in spatial),
        tuple(units),
        channel_names,
    )


def _split_channels(
    array: zarr.Array,
    name: str,
    where: str,
    voxel_size: tuple[float, ...],
    offset: tuple[float, ...],
    axis_names: Sequence[str] | None,
    units: tuple[str, ...],
    channel_names: Sequence[str] | None,
) -> list[Volume]:
    dims = len(voxel_size)
    if len(offset) != dims or len(units) != dims:
        raise ViewError(
            f"{where}: offset {offset} / units {units} do not match voxel_size {voxel_size}"
        )
    if axis_names is None or len(axis_names) != dims:
        raise ViewError(f"{where}: no names for {dims} spatial axes (axis_names {axis_names})")
    geometry = dict(voxel_size=voxel_size, offset=offset, axis_names=tuple(axis_names), units=units)
    leading = array.shape[: array.ndim - dims]
    if all(n == 1 for n in leading):
        return [Volume(name, layer_role(name), _Channel(array, (0,) * len(leading)), **geometry)]
    count = leading[-1]
    names = _channel_names(name, count, channel_names, where)
    volumes = []
    for index in np.ndindex(*leading):
        outer = [str(i) for i, n in zip(index[:-1], leading[:-1], strict=True) if n > 1]
        layer = _join(name, "/".join([*outer, names[index[-1]]]))
        volumes.append(Volume(layer, layer_role(layer), _Channel(array, tuple(index)), **geometry))
    return volumes


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


def _segmentation_dtype(volume: Volume) -> np.dtype | None:
    """Unsigned integer type neuroglancer accepts for segment ids, or None."""
    dtype = np.dtype(volume.data.dtype)
    if dtype == np.bool_:
        return np.dtype(np.uint8)
    if dtype.kind == "u":
        return dtype
    return None


def _sample_range(volume: Volume) -> tuple[float, float]:
    """Min and max over a central block of at most ``RANGE_SAMPLE_VOXELS`` voxels."""
    shape = np.array(volume.data.shape)
    side = int(RANGE_SAMPLE_VOXELS ** (1 / len(shape)))
    extent = np.minimum(shape, side)
    begin = (shape - extent) // 2
    block = volume.data[tuple(slice(b, b + e) for b, e in zip(begin, extent, strict=True))]
    low, high = float(np.min(block)), float(np.max(block))
    return (low, high) if high > low else (low, low + 1.0)


def _layer(volume: Volume, role: str) -> neuroglancer.Layer:
    space = neuroglancer.CoordinateSpace(
        names=list(volume.axis_names), units=list(volume.units), scales=list(volume.voxel_size)
    )
    data = volume.data
    if role == "segmentation":
        dtype = _segmentation_dtype(volume)
        if dtype is None:
            _note(f"{volume.name} has dtype {data.dtype}, shown as an image")
            role = "other"
        elif dtype != data.dtype:
            data = _Channel(data.array, data.index, dtype)
    source_volume = neuroglancer.LocalVolume(
        data,
        dimensions=space,
        volume_type="segmentation" if role == "segmentation" else "image",
    )
    # voxel units of the output space: world offset / voxel size, may be fractional
    translation = [o / v for o, v in zip(volume.offset, volume.voxel_size, strict=True)]
    rank = len(translation)
    matrix = np.concatenate([np.eye(rank), np.array(translation)[:, None]], axis=1)
    source = neuroglancer.LayerDataSource(
        url=source_volume,
        transform=neuroglancer.CoordinateSpaceTransform(output_dimensions=space, matrix=matrix),
    )
    if role == "segmentation":
        return neuroglancer.SegmentationLayer(source=source)
    if role == "distance":
        shader = DIVERGING_SHADER
    elif role == "unit":
        shader = UNIT_SHADER
    else:
        low, high = _sample_range(volume)
        shader = GRAY_SHADER.format(low=low, high=high)
    return neuroglancer.ImageLayer(source=source, shader=shader)


def fill_state(state: neuroglancer.ViewerState, volumes: Sequence[Volume]) -> None:
    """Add one layer per volume.

    The view is centred on the first raw and zoomed so that its in-plane
    extent spans ``FIT_PIXELS``. Visible: the first raw, every segmentation
    (labels and instances), the first distance channel of the newest
    prediction and the first container's first ``target`` distance; every
    other layer is hidden.
    """
    finest = min(volumes, key=lambda v: np.prod(v.voxel_size))
    state.dimensions = neuroglancer.CoordinateSpace(
        names=list(finest.axis_names), units=list(finest.units), scales=list(finest.voxel_size)
    )
    # the last (fastest) axis horizontal: funlib's z, y, x is neuroglancer's x, y, z
    state.display_dimensions = list(reversed(finest.axis_names))
    if len(finest.voxel_size) == 2:
        state.layout = "xy"
    raws = [v for v in volumes if v.role == "raw"] or list(volumes)
    centre = np.add(raws[0].offset, np.multiply(raws[0].data.shape, raws[0].voxel_size) / 2)
    state.position = [float(c / s) for c, s in zip(centre, finest.voxel_size, strict=True)]
    # cross_section_scale: voxels of ``state.dimensions`` per screen pixel
    extent = np.multiply(raws[0].data.shape, raws[0].voxel_size) / finest.voxel_size
    state.cross_section_scale = float(max(extent[-2:]) / FIT_PIXELS)
    main = volumes[0].container
    shown = set()
    prediction = newest_prediction(volumes)
    prediction_shown = next(
        (v for v in prediction if v.role == "distance"), prediction[0] if prediction else None
    )
    for volume in volumes:
        inner = volume.name.removeprefix(volume.container).lstrip("/")
        kind = volume.role
        if kind == "distance" and not inner.startswith("target"):
            kind = "other distance"
        visible = (
            kind == "segmentation"
            or volume is prediction_shown
            or (kind == "raw" and kind not in shown)
            or (volume.container == main and kind == "distance" and kind not in shown)
        )
        if visible:
            shown.add(kind)
        state.layers.append(name=volume.name, layer=_layer(volume, volume.role), visible=visible)


def make_viewer(volumes: Sequence[Volume]) -> neuroglancer.Viewer:
    """A viewer (server not yet started) showing ``volumes``."""
    viewer = neuroglancer.Viewer()
    with viewer.txn() as state:
        fill_state(state, volumes)
    return viewer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.view",
        description="Show a preview, snapshot or container of this project in a local "
        "neuroglancer viewer (bound to 127.0.0.1).",
    )
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="zarr container, group inside one, or directory of them; several are overlaid "
        "(e.g. the raw data, a prediction, a segmentation)",
    )
    parser.add_argument("--batch", type=int, help="batch_<N> to show (default: the newest)")
    parser.add_argument("--port", type=int, default=0, help="port (default: any free one)")
    parser.add_argument(
        "--state-only", action="store_true", help="print the viewer state as JSON and exit"
    )
    args = parser.parse_args(argv)
    try:
        volumes = find_all([Path(p) for p in args.paths], args.batch)
    except ViewError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    neuroglancer.set_server_bind_address("127.0.0.1", args.port)
    viewer = make_viewer(volumes)
    if args.state_only:
        print(json.dumps(viewer.state.to_json(), indent=2))
        return 0
    print(viewer.get_viewer_url(), flush=True)
    print("serving until Ctrl-C", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
