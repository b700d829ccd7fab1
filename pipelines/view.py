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

Every dataset found in the hierarchy becomes layers
(:mod:`pipelines.view_layers`), read with :func:`gp_hotdistance.data.open_volume`:

- an OME-NGFF 0.4 group (attribute ``multiscales``) is one image: its first
  dataset, placed by its ``scale`` and ``translation`` transformations;
- an array with funlib attributes (``voxel_size``, optional ``offset`` or the
  challenge's ``translation``, ``axis_names``, ``units``) is one image;
- anything else (no voxel size, axes ``open_volume`` refuses) is skipped with
  a printed note (voxel size is never assumed).

A leading channel axis gives one layer per channel, named by the attribute
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
import json
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import neuroglancer
import numpy as np

from pipelines.view_layers import Channel, Layer, ViewError, find_all, newest_prediction, note

DISTANCE_RANGE = (-1.0, 1.0)  # tanh-normalised signed distances
UNIT_RANGE = (0.0, 1.0)  # one-hot targets, masks, distance masks
RANGE_SAMPLE_VOXELS = 2**20  # voxels read (central block) for data-driven ranges
FIT_PIXELS = 400  # initial zoom: the first raw's larger side spans this many screen pixels

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


def _segmentation_dtype(volume: Layer) -> np.dtype | None:
    """Unsigned integer type neuroglancer accepts for segment ids, or None."""
    dtype = np.dtype(volume.data.dtype)
    if dtype == np.bool_:
        return np.dtype(np.uint8)
    if dtype.kind == "u":
        return dtype
    return None


def _sample_range(volume: Layer) -> tuple[float, float]:
    """Min and max over a central block of at most ``RANGE_SAMPLE_VOXELS`` voxels."""
    shape = np.array(volume.data.shape)
    side = int(RANGE_SAMPLE_VOXELS ** (1 / len(shape)))
    extent = np.minimum(shape, side)
    begin = (shape - extent) // 2
    block = volume.data[tuple(slice(b, b + e) for b, e in zip(begin, extent, strict=True))]
    low, high = float(np.min(block)), float(np.max(block))
    return (low, high) if high > low else (low, low + 1.0)


def _layer(volume: Layer, role: str) -> neuroglancer.Layer:
    space = neuroglancer.CoordinateSpace(
        names=list(volume.axis_names), units=list(volume.units), scales=list(volume.voxel_size)
    )
    data = volume.data
    if role == "segmentation":
        dtype = _segmentation_dtype(volume)
        if dtype is None:
            note(f"{volume.name} has dtype {data.dtype}, shown as an image")
            role = "other"
        elif dtype != data.dtype:
            data = Channel(data.array, data.index, dtype)
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


def fill_state(state: neuroglancer.ViewerState, volumes: Sequence[Layer]) -> None:
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


def make_viewer(volumes: Sequence[Layer]) -> neuroglancer.Viewer:
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
