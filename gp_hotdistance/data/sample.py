"""One annotated sample (raw volume, label crops, optional mask) read at the
training voxel size ``V`` as numpy arrays (no gunpowder, no torch).

Geometry (one axis, ``V`` = 8, labels at 4 nm)::

    raw        |-------|-------|-------|-------|-------|-------|   large volume
    label crop              |---:---:---:---:---:---|             4 nm voxels
    labelled ROI                    |-------|-------|             crop shrunk to V
    outside the labelled ROI: gt 0, mask 0 (unknown), raw is real data

Rules (see also :mod:`gp_hotdistance.data.ome`):

- Labels are binarised first: nonzero is the class for per-class datasets;
  ``== class_id`` for a class-id dataset (uint64 ids compared exactly).
- Labels finer than ``V`` by integer factors: a coarse voxel is in the class
  iff MORE than half the fine voxels it covers are. Coarser: nearest
  neighbour. Raw: the level at ``V``, else mean-pooled from a finer level,
  else (``upsample``) linearly interpolated from a coarser one, at the fine
  voxels' centres, the edge values kept beyond the outer coarse centres
  (:func:`~gp_hotdistance.data.resample.upsample_linear`: no overshoot, no
  values beyond the data's range, a read equal to the same voxels of the
  whole volume upsampled).
- A user mask (1 = known) is read like labels, except that a coarse voxel is
  known only if EVERY fine voxel it covers is; outside the mask's ROI the
  mask is 0.
- A channel's labelled ROI is its dataset's ROI shrunk to the ``V`` grid (a
  coarse voxel only partly covered by the crop is not labelled) and cut to
  the raw volume's ROI: labels without raw under them are unknown.
- A channel with no dataset in this sample is unknown everywhere (mask 0):
  unknown is not absent.
- Reads touch only the window of each dataset that covers the requested ROI.
- Values are checked on every window read (per batch, never a scan of the
  whole volume), and a bad one raises :class:`DataValueError` naming the
  dataset, the window, how many voxels and some of their values: raw must be
  finite (NaN, inf refused); labels hold whole numbers >= 0 (NaN, inf,
  negative, fractional refused); a mask holds only 0 and 1 (NaN, 2, -1 and
  fractional values such as 0.5 refused: a sample mask says known or
  unknown, it carries no weights).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt
from funlib.geometry import Coordinate, Roi

from ..geometry import roi_slices
from ..kernels.validation import check_class_ids
from .ome import Volume, open_volume
from .resample import (
    downsample_all,
    downsample_labels,
    fine_positions,
    interpolate_linear,
    mean_pool,
    upsample_nearest,
)

PathLike = str | os.PathLike
_SHOWN_VALUES = 5


class DataValueError(ValueError):
    """A dataset holds values the data layer refuses (see the module docs);
    the message names the dataset, where, how many voxels and some values."""


def _refuse(volume: Volume, roi: Roi, bad: npt.NDArray[np.bool_], data: npt.NDArray, rule: str):
    values = np.unique(data[bad])[:_SHOWN_VALUES].tolist()
    raise DataValueError(
        f"{volume.path}: {int(bad.sum())} of {data.size} voxels read in {roi} break the rule "
        f"'{rule}', with values such as {values}"
    )


def check_raw_values(volume: Volume, data: npt.NDArray, roi: Roi) -> None:
    """Raise :class:`DataValueError` if float raw ``data`` (read from
    ``volume`` over ``roi``) holds NaN or infinities."""
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        _refuse(volume, roi, ~np.isfinite(data), data, "raw is finite (no NaN or inf)")


def check_label_values(volume: Volume, data: npt.NDArray, roi: Roi) -> None:
    """Raise :class:`DataValueError` unless label ``data`` holds whole
    numbers >= 0 (ids, or 0/1)."""
    kind = data.dtype.kind
    if kind == "i" and data.size and data.min() < 0:
        _refuse(volume, roi, data < 0, data, "labels are whole numbers >= 0")
    elif kind == "f":
        good = np.isfinite(data) & (data >= 0) & (data == np.floor(data))
        if not good.all():
            _refuse(volume, roi, ~good, data, "labels are whole numbers >= 0 (no NaN or inf)")


def check_mask_values(volume: Volume, data: npt.NDArray, roi: Roi) -> None:
    """Raise :class:`DataValueError` unless mask ``data`` holds only 0 and 1."""
    if data.dtype.kind == "b" or not data.size:
        return
    if data.dtype.kind in "iu" and data.min() >= 0 and data.max() <= 1:
        return
    good = (data == 0) | (data == 1)
    if not good.all():
        _refuse(volume, roi, ~good, data, "a sample mask holds 0 (unknown) and 1 (known) only")


def expand_label_template(template: str, channels: Sequence[str] | None = None) -> dict[str, str]:
    """Expand cellmap-data's bracket template into one path per class:
    ``".../crop7/[mito,er]"`` gives ``{"mito": ".../crop7/mito", "er":
    ".../crop7/er"}``. Only the classes in the brackets are returned; classes
    of ``channels`` missing from them are unknown in that sample. A template
    without brackets is an error; so are bracket classes not in ``channels``
    (when given)."""
    matches = list(re.finditer(r"\[([^\[\]]*)\]", template))
    if len(matches) != 1:
        raise ValueError(f"label template {template!r} needs exactly one [class,...] bracket")
    match = matches[0]
    names = [n.strip() for n in match.group(1).split(",") if n.strip()]
    if not names:
        raise ValueError(f"label template {template!r} lists no classes")
    if channels is not None:
        unknown = [n for n in names if n not in channels]
        if unknown:
            raise ValueError(
                f"label template {template!r} names classes {unknown} not in channels {list(channels)}"
            )
    head, tail = template[: match.start()], template[match.end() :]
    return {n: f"{head}{n}{tail}" for n in names}


def normalize_raw(data: npt.ArrayLike, dtype: npt.DTypeLike) -> npt.NDArray[np.float32]:
    """Raw intensities as the network sees them in training, evaluation and
    prediction alike: float32, integer raw divided by the maximum of its
    ``dtype`` (``gp.Normalize``'s convention: uint8 / 255), float raw kept as
    it is. ``data`` is not modified."""
    out = np.array(data, dtype=np.float32)
    if np.issubdtype(np.dtype(dtype), np.integer):
        out /= np.float32(np.iinfo(np.dtype(dtype)).max)
    return out


class Sample:
    """A raw volume plus label datasets, read at the training voxel size.

    Args:
        raw: path of the raw volume (multiscale group or array), or that
            volume as :func:`~gp_hotdistance.data.open_volume` opened it at
            ``voxel_size`` (shared by the samples of one volume's crops).
        labels: ``{channel: path}`` (one binary/instance dataset per class;
            channels without an entry are unknown here), or one class-id
            dataset path (with ``class_ids``), which annotates every channel.
        channels: the class names, in channel order.
        voxel_size: the training voxel size ``V`` (integer world units).
        class_ids: for a class-id dataset, the id of each channel, as a list
            in channel order or ``{channel: id}``; default ``1..C``.
        mask: optional path of a mask dataset, 1 = known (all channels).
        upsample: read raw coarser than ``voxel_size`` (by integer factors)
            by linear interpolation; ``False`` refuses such raw.
    """

    def __init__(
        self,
        raw: PathLike | Volume,
        labels: Mapping[str, PathLike] | PathLike,
        channels: Sequence[str],
        voxel_size: Sequence[int],
        class_ids: Sequence[int] | Mapping[str, int] | None = None,
        mask: PathLike | None = None,
        upsample: bool = True,
    ):
        self.channels = list(channels)
        if not self.channels:
            raise ValueError("Sample: the channel list is empty")
        self.voxel_size = Coordinate(voxel_size)
        # an opened raw volume may be shared by the samples of its crops
        opened = raw if isinstance(raw, Volume) else open_volume(raw, self.voxel_size)
        self.raw = _spatial(opened, "raw")
        if not upsample and any(
            v > t for v, t in zip(self.raw.voxel_size, self.voxel_size, strict=True)
        ):
            raise ValueError(
                f"{self.raw.path}: raw voxel size {tuple(self.raw.voxel_size)} is coarser than "
                f"the training voxel size {tuple(self.voxel_size)}, no finer level exists and "
                "upsampling is off"
            )
        self.class_ids: dict[str, int] | None = None
        if isinstance(labels, Mapping):
            if class_ids is not None:
                raise ValueError("Sample: class_ids is only for a single class-id dataset")
            unknown = [c for c in labels if c not in self.channels]
            if unknown:
                raise ValueError(
                    f"Sample: label datasets for {unknown} not in channels {self.channels}"
                )
            opened = {
                c: _spatial(open_volume(p, self.voxel_size), f"labels {c}")
                for c, p in labels.items()
            }
            self.labels: dict[str, Volume] = {c: opened[c] for c in self.channels if c in opened}
        else:
            volume = _spatial(open_volume(labels, self.voxel_size), "labels")
            self.labels = {c: volume for c in self.channels}
            self.class_ids = _class_ids(class_ids, self.channels)
        self.mask = None if mask is None else _spatial(open_volume(mask, self.voxel_size), "mask")
        self.raw_roi = self.raw.roi.snap_to_grid(self.voxel_size, mode="shrink")
        dataset_rois = {
            c: v.roi.snap_to_grid(self.voxel_size, mode="shrink") for c, v in self.labels.items()
        }
        self.labelled_rois: dict[str, Roi | None] = {
            c: dataset_rois[c].intersect(self.raw_roi) if c in dataset_rois else None
            for c in self.channels
        }
        rois = [r for r in self.labelled_rois.values() if r is not None and not r.empty]
        if not rois:
            if all(r.empty for r in dataset_rois.values()):
                why = "every label dataset is smaller than one training voxel"
            else:
                why = (
                    f"the labels ({', '.join(sorted({str(r) for r in dataset_rois.values()}))}) "
                    f"lie wholly outside the raw volume's ROI {self.raw_roi}"
                )
            raise ValueError(
                f"Sample {self.raw.path}: no labelled voxels at voxel size "
                f"{tuple(self.voxel_size)}: {why}"
            )
        self.labelled_roi = rois[0]
        for roi in rois[1:]:
            self.labelled_roi = self.labelled_roi.union(roi)
        self.labelled_volume = sum(
            int(np.prod(cell.shape / self.voxel_size)) for cell in union_cells(rois)
        )

    def __repr__(self) -> str:
        return (
            f"Sample(raw={self.raw.path!r}, labels={ {c: v.path for c, v in self.labels.items()} })"
        )

    def read_raw(self, roi: Roi) -> npt.NDArray[np.float32]:
        """Raw intensities (float32, not normalised: see
        :func:`normalize_raw`) of world ``roi`` at the training voxel size;
        ``roi`` must be on the ``V`` grid and inside :attr:`raw_roi`."""
        self._check_roi(roi)
        if not self.raw_roi.contains(roi):
            raise ValueError(
                f"{self.raw.path}: ROI {roi} leaves the raw volume's ROI {self.raw_roi}"
            )
        raw, voxel_size = self.raw, self.voxel_size
        down = Coordinate(max(t // v, 1) for v, t in zip(raw.voxel_size, voxel_size, strict=True))
        up = Coordinate(max(v // t, 1) for v, t in zip(raw.voxel_size, voxel_size, strict=True))
        # the raw window: the ROI itself on the finer and equal axes; on the
        # coarser ones, the coarse voxels whose centres bracket the fine ones'
        begin, end, positions = list(roi.begin), list(roi.end), {}
        for axis, factor in enumerate(up):
            if factor == 1:
                continue
            size, count = raw.voxel_size[axis], raw.shape[axis]
            first = (roi.begin[axis] - raw.offset[axis]) // voxel_size[axis]
            at = np.clip(
                fine_positions(first, roi.shape[axis] // voxel_size[axis], factor), 0, count - 1
            )
            low, high = int(np.floor(at[0])), min(int(np.floor(at[-1])) + 1, count - 1)
            begin[axis] = raw.offset[axis] + low * size
            end[axis] = raw.offset[axis] + (high + 1) * size
            positions[axis] = at - low
        window = Roi(Coordinate(begin), Coordinate(end) - Coordinate(begin))
        data = raw.read(window)
        check_raw_values(raw, data, window)
        data = mean_pool(data, down)
        for axis, at in positions.items():
            data = interpolate_linear(data, axis, at)
        return data.astype(np.float32, copy=False)

    def read_raw_padded(self, roi: Roi) -> npt.NDArray[np.float32]:
        """:meth:`read_raw` of any world ``roi`` on the ``V`` grid, zeros
        outside :attr:`raw_roi` (what blockwise prediction reads there)."""
        self._check_roi(roi)
        out = np.zeros(tuple(roi.shape / self.voxel_size), dtype=np.float32)
        inside = roi.intersect(self.raw_roi)
        if not inside.empty:
            out[roi_slices(inside, roi, self.voxel_size)] = self.read_raw(inside)
        return out

    def raw_padding(self, below: Coordinate, above: Coordinate) -> tuple[Coordinate, Coordinate]:
        """Voxels beyond the raw volume, per axis below and above it, that a
        request reading the world box ``[c - below, c + above)`` around a
        centre voxel ``c`` (its corner) reads at worst, over every labelled
        voxel ``c``; ``(0, ..), (0, ..)`` when every such request fits."""
        cells = union_cells([r for r in self.labelled_rois.values() if r is not None])
        dims = self.voxel_size.dims
        first = Coordinate(min(c.begin[a] for c in cells) for a in range(dims))
        last = Coordinate(max(c.end[a] for c in cells) for a in range(dims)) - self.voxel_size
        low = first - Coordinate(below) - self.raw_roi.begin
        high = self.raw_roi.end - (last + Coordinate(above))
        return (
            Coordinate(max(0, -(v // s)) for v, s in zip(low, self.voxel_size, strict=True)),
            Coordinate(max(0, -(v // s)) for v, s in zip(high, self.voxel_size, strict=True)),
        )

    def read_labels(self, roi: Roi) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
        """``(gt, mask)``, each ``(C, *spatial)`` uint8, of any world ``roi``
        on the ``V`` grid: 0/0 outside a channel's labelled ROI, the resampled
        binary labels and mask (or 1) inside it."""
        self._check_roi(roi)
        shape = (len(self.channels), *(roi.shape / self.voxel_size))
        gt = np.zeros(shape, dtype=np.uint8)
        mask = np.zeros(shape, dtype=np.uint8)
        windows: dict = {}  # a dataset window shared by channels is read once
        for i, channel in enumerate(self.channels):
            labelled = self.labelled_rois[channel]
            if labelled is None:
                continue
            inside = roi.intersect(labelled)
            if inside.empty:
                continue
            index = roi_slices(inside, roi, self.voxel_size)
            class_id = None if self.class_ids is None else self.class_ids[channel]
            gt[(i, *index)] = _read_resampled(
                self.labels[channel],
                inside,
                self.voxel_size,
                downsample_labels,
                class_id,
                windows,
                check_label_values,
            )
            if self.mask is None:
                mask[(i, *index)] = 1
                continue
            known = inside.intersect(self.mask.roi.snap_to_grid(self.voxel_size, mode="shrink"))
            if not known.empty:
                index = roi_slices(known, roi, self.voxel_size)
                mask[(i, *index)] = _read_resampled(
                    self.mask,
                    known,
                    self.voxel_size,
                    downsample_all,
                    None,
                    windows,
                    check_mask_values,
                )
        return gt, mask

    def _check_roi(self, roi: Roi) -> None:
        if roi.dims != self.voxel_size.dims or roi != roi.snap_to_grid(self.voxel_size):
            raise ValueError(
                f"Sample {self.raw.path}: ROI {roi} is not on the training grid of voxel "
                f"size {tuple(self.voxel_size)}"
            )


def _spatial(volume: Volume, role: str) -> Volume:
    """``volume``, refused (``ValueError``) if it has a channel axis: a
    sample reads one spatial array per raw, label and mask dataset."""
    if volume.channels:
        raise ValueError(
            f"{volume.path}: the {role} dataset has a channel axis (shape {volume.shape}); "
            "a sample reads spatial arrays, one per class for labels"
        )
    return volume


def _class_ids(
    class_ids: Sequence[int] | Mapping[str, int] | None, channels: list[str]
) -> dict[str, int]:
    if class_ids is None:
        return {c: i + 1 for i, c in enumerate(channels)}
    if isinstance(class_ids, Mapping):
        missing = [c for c in channels if c not in class_ids]
        if missing:
            raise ValueError(f"Sample: class_ids {dict(class_ids)} has no id for {missing}")
        class_ids = [class_ids[c] for c in channels]
    try:
        ids = check_class_ids(class_ids, len(channels))
    except (TypeError, ValueError) as error:
        raise type(error)(f"Sample: {error} for channels {channels}") from None
    return dict(zip(channels, ids, strict=True))


def _read_resampled(
    volume: Volume,
    roi: Roi,
    voxel_size: Coordinate,
    down: Callable[[npt.NDArray, Sequence[int]], npt.NDArray[np.bool_]],
    class_id: int | None,
    windows: dict,
    check: Callable[[Volume, npt.NDArray, Roi], None],
) -> npt.NDArray[np.uint8]:
    """Binary (uint8) ``volume`` over ``roi`` (on the ``voxel_size`` grid,
    inside the volume's ROI shrunk to it) at ``voxel_size``: read the window
    of dataset voxels covering ``roi`` (or take it from ``windows``), check its
    values with ``check``, binarise, upsample the coarser axes (nearest),
    reduce the finer ones with ``down``, crop."""
    up = Coordinate(max(v // t, 1) for v, t in zip(volume.voxel_size, voxel_size, strict=True))
    factors = Coordinate(max(t // v, 1) for v, t in zip(volume.voxel_size, voxel_size, strict=True))
    # grow to the dataset's voxel grid on the coarser axes (a no-op elsewhere)
    window = (roi - volume.offset).snap_to_grid(volume.voxel_size, mode="grow") + volume.offset
    key = (volume.path, tuple(window.begin), tuple(window.shape), check)
    if key not in windows:
        windows[key] = volume.read(window)
        check(volume, windows[key], window)
    data = windows[key]
    if class_id is None:
        binary = data != 0
    else:
        binary = data == np.asarray(class_id, dtype=data.dtype)
    binary = down(upsample_nearest(binary, up), factors)
    crop = roi_slices(roi, window, voxel_size)
    return binary[crop].astype(np.uint8)


def union_cells(rois: Sequence[Roi]) -> list[Roi]:
    """Disjoint boxes whose union is the union of ``rois``: space is split at
    every ROI boundary, and the cells inside some ROI are kept."""
    rois = [r for r in rois if not r.empty]
    if not rois:
        return []
    cuts = [sorted({c for r in rois for c in (r.begin[a], r.end[a])}) for a in range(rois[0].dims)]
    cells = []
    for cell in np.ndindex(*(len(c) - 1 for c in cuts)):
        begin = Coordinate(cuts[a][i] for a, i in enumerate(cell))
        end = Coordinate(cuts[a][i + 1] for a, i in enumerate(cell))
        if any(r.contains(begin) for r in rois):
            cells.append(Roi(begin, end - begin))
    return cells
