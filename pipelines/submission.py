"""Challenge submissions' crops: the crops file (where each test crop lies in
a raw dataset), a crop predicted and segmented on its own grid, and the
arrays written as the challenge reads them (``cropN/<label>`` with
``voxel_size`` and ``translation`` attributes).

:mod:`pipelines.submit` is the command that writes a whole submission;
:mod:`pipelines.challenge` holds the layout, scores and tuned parameters.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import zarr
from funlib.geometry import Coordinate, Roi

from gp_hotdistance import scores
from gp_hotdistance.segment import DEFAULT_INSTANCE_CLASSES, SegmentParameters, segment_class
from pipelines.config import Config, ConfigError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class CropRow:
    """One row of a crops file: where a crop lies in a raw dataset.

    ``labels``: the labels to write for it (empty: every class of the run).
    """

    crop: str
    raw: str
    voxel_size: tuple[float, ...]
    translation: tuple[float, ...]
    shape: tuple[int, ...]
    labels: tuple[str, ...] = ()


def _numbers(text: str, kind: type, where: str) -> tuple:
    parts = text.strip().strip("[]()").replace(";", " ").replace(",", " ").split()
    try:
        return tuple(kind(p) for p in parts)
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not a list of numbers") from None


def read_crop_rows(path: str | Path) -> list[CropRow]:
    """The crops of a CSV file with a header naming the columns ``crop``
    (or ``crop_name``), ``raw`` (raw dataset path, relative to the file),
    ``voxel_size``, ``translation``, ``shape`` (``[z;y;x]`` or space
    separated, world units and voxels) and optionally ``class_label`` (one
    row per crop and label, as the challenge's test crop manifest). Rows of
    one crop must agree on raw and geometry.

    Raises:
        ConfigError: missing columns, bad numbers, or rows of one crop that differ.
    """
    path = Path(path)
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    if not rows:
        raise ConfigError(f"{path}: no crops")
    header = {k.strip() for k in rows[0]}
    crop_key = "crop" if "crop" in header else "crop_name"
    missing = {crop_key, "raw", "voxel_size", "translation", "shape"} - header
    if missing:
        raise ConfigError(f"{path}: missing column(s) {sorted(missing)}; header {sorted(header)}")
    crops: dict[str, CropRow] = {}
    for line, row in enumerate(rows, start=2):
        row = {k.strip(): (v or "").strip() for k, v in row.items()}
        where = f"{path}:{line}"
        name = row[crop_key] if row[crop_key].startswith("crop") else f"crop{row[crop_key]}"
        raw = row["raw"] if os.path.isabs(row["raw"]) else str(path.parent / row["raw"])
        found = CropRow(
            name,
            raw,
            _numbers(row["voxel_size"], float, where),
            _numbers(row["translation"], float, where),
            _numbers(row["shape"], int, where),
        )
        if not len(found.voxel_size) == len(found.translation) == len(found.shape):
            raise ConfigError(f"{where}: voxel_size, translation and shape differ in length")
        label = row.get("class_label") or ""
        earlier = crops.get(name)
        if earlier is not None and (earlier.raw, earlier.voxel_size, earlier.translation,
                                    earlier.shape) != (found.raw, found.voxel_size,
                                                       found.translation, found.shape):  # fmt: skip
            raise ConfigError(f"{where}: {name} appears with another raw or geometry")
        labels = (earlier.labels if earlier is not None else ()) + ((label,) if label else ())
        crops[name] = CropRow(
            name, found.raw, found.voxel_size, found.translation, found.shape, labels
        )
    return list(crops.values())


def read_raw_at(path: str, roi: Roi, voxel_size: Coordinate) -> npt.NDArray[np.float32]:
    """Normalised raw of world ``roi`` at ``voxel_size`` (mean-pooled from a
    finer level), zeros outside the raw volume."""
    from gp_hotdistance.data import mean_pool, normalize_raw, open_volume
    from gp_hotdistance.geometry import roi_slices

    try:
        volume = open_volume(path, voxel_size)
    except (ValueError, FileNotFoundError) as error:
        raise ConfigError(f"raw {path}: {error}") from error
    factors = voxel_size / volume.voxel_size
    out = np.zeros(tuple(roi.shape / voxel_size), np.float32)
    inside = roi.intersect(volume.roi.snap_to_grid(voxel_size, mode="shrink"))
    if not inside.empty:
        pooled = mean_pool(volume.read(inside), factors)
        out[roi_slices(inside, roi, voxel_size)] = normalize_raw(pooled, volume.dtype)
    return out


def segment_crop(
    row: CropRow,
    config: Config,
    model: torch.nn.Module,
    device: str,
    parameters: Mapping[str, SegmentParameters],
    instance_classes: Sequence[str] = DEFAULT_INSTANCE_CLASSES,
) -> dict[str, npt.NDArray]:
    """Predict a crop (raw read with the model's context at the training
    voxel size, over the crop grown to that grid), segment it with
    ``parameters`` and put each class on the crop's own grid."""
    from gp_hotdistance.torch.inference import context_for, predict_padded

    voxel_size = Coordinate(config.data.voxel_size)
    if len(row.voxel_size) != voxel_size.dims:
        raise ConfigError(
            f"{row.crop}: {len(row.voxel_size)}-D crop for a {voxel_size.dims}-D model"
        )
    end = [t + s * v for t, s, v in zip(row.translation, row.shape, row.voxel_size, strict=True)]
    begin = Coordinate(
        int(np.floor(t / v)) * v for t, v in zip(row.translation, voxel_size, strict=True)
    )
    stop = Coordinate(int(np.ceil(e / v)) * v for e, v in zip(end, voxel_size, strict=True))
    roi = Roi(begin, stop - begin)
    context = Coordinate(context_for(model, config.model.output_shape)) * voxel_size
    raw = read_raw_at(row.raw, roi.grow(context, context), voxel_size)
    prediction = predict_padded(model, raw, config.model.output_shape, device)
    labels = row.labels or tuple(config.channels)
    unknown = [label for label in labels if label not in config.channels]
    if unknown:
        raise ConfigError(
            f"{row.crop}: labels {unknown} are not classes of the run {config.channels}"
        )
    classes = len(config.channels)
    out = {}
    for label in labels:
        i = config.channels.index(label)
        instance = label in instance_classes
        segmentation = segment_class(
            prediction[i], prediction[classes + i], config.scale_factor, voxel_size,
            parameters[label], instance,
        )  # fmt: skip
        placed = scores.resample_to_grid(
            segmentation, tuple(voxel_size), tuple(roi.offset), row.voxel_size, row.translation,
            row.shape, instance,
        )  # fmt: skip
        out[label] = placed.astype(np.uint64 if instance else np.uint8)
    return out


def write_label(root: zarr.Group, crop: str, label: str, data: npt.NDArray, row: CropRow) -> None:
    """``root/crop/label`` as the challenge reads it: an array with
    ``voxel_size`` and ``translation`` attributes (world units)."""
    group = root.require_group(crop)
    chunks = tuple(min(s, 64) for s in data.shape)
    array = group.create_dataset(label, data=data, chunks=chunks, overwrite=False)
    array.attrs.update({"voxel_size": list(row.voxel_size), "translation": list(row.translation)})
