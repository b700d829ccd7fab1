"""Blockwise instances and masks from a prediction (``blockwise segment``).

Three steps, each resumable (``docs/blockwise.md``, "Segment")::

    1. fragments (daisy)  each block, read with a HALO-voxel border:
                          semantic classes -> OUT/<class>/s0 (uint8 0/1);
                          instance classes -> OUT/fragments/<class>/s0 (uint64,
                          ids unique in the volume) + a record of the block's
                          fragments and its joins with its neighbours'
                          voxels (OUT/fragments/records/<class>/<block>.npz)
    2. merge (here)       every record -> one table fragment id -> object id
                          (OUT/fragments/tables/<class>.npz)
    3. relabel (daisy)    each block: OUT/fragments/<class> through the table
                          -> OUT/<class>/s0 (uint64)

The objects are exactly those of :func:`gp_hotdistance.segment.instances` on
the whole volume, with the same ids (``1..N`` in C order of their first voxel).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import zarr
from funlib.geometry import Coordinate, Roi

from gp_hotdistance import segment as seg
from gp_hotdistance.data.volume import Volume
from gp_hotdistance.geometry import relative_slices
from pipelines.blockwise.jobs import BlockJob
from pipelines.blockwise.outputs import array_path, signature_value

FRAGMENTS = "fragments"
"""Group of the fragments, their records and tables inside the output."""

_RECORD_FIELDS = (
    "ids", "sizes", "seeded", "first", "merges", "inner", "inner_height",
    "outer_ids", "outer_index", "outer_height",
)  # fmt: skip


@dataclass
class SegmentJob(BlockJob):
    """Shared settings of the two daisy steps of ``blockwise segment``."""

    prediction: Volume | None = None
    channels: tuple[str, ...] = ()
    instance_classes: tuple[str, ...] = ()
    scale_factor: float = 1.0
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    block_shape: tuple[int, ...] = ()

    @property
    def instance_channels(self) -> list[str]:
        return [c for c in self.channels if c in self.instance_classes]

    def class_parameters(self, channel: str) -> seg.SegmentParameters:
        return seg.SegmentParameters(**self.parameters[channel])

    def block_index(self, write_roi: Roi) -> int:
        """The block's position in the C-order block grid."""
        grid = self.markers.grid_shape
        index = tuple((write_roi.offset - self.volume_roi.offset) / self.block_size)
        return int(np.ravel_multi_index(index, grid))

    def signature(self) -> dict[str, Any]:
        if self.prediction is None:
            raise ValueError("a segment job needs a prediction dataset")
        return {
            **super().signature(),
            **signature_value(
                {
                    "prediction": str(Path(self.prediction.path).resolve()),
                    "channels": list(self.channels),
                    "instance_classes": self.instance_channels,
                    "scale_factor": self.scale_factor,
                    "parameters": self.parameters,
                }
            ),
        }


def record_path(output: str | Path, channel: str, index: int) -> Path:
    return Path(output) / FRAGMENTS / "records" / channel / f"{index}.npz"


def table_path(output: str | Path, channel: str) -> Path:
    return Path(output) / FRAGMENTS / "tables" / f"{channel}.npz"


def fragments_name(channel: str) -> str:
    return f"{FRAGMENTS}/{channel}"


@dataclass
class FragmentsJob(SegmentJob):
    """Step 1: masks of semantic classes, fragments and records of instance classes."""

    def process(self, write_roi: Roi) -> dict[str, float]:
        if self.prediction is None:
            raise ValueError("a segment job needs a prediction dataset")
        started = time.perf_counter()
        halo = Coordinate((seg.HALO,) * self.voxel_size.dims) * self.voxel_size
        read_roi = write_roi.grow(halo, halo)
        prediction = self.prediction.read_padded(read_roi)
        inside = np.zeros(prediction.shape[1:], bool)
        inside[relative_slices(read_roi.intersect(self.volume_roi), read_roi, self.voxel_size)] = 1
        read = time.perf_counter()
        crop = relative_slices(write_roi, read_roi, self.voxel_size)
        origin = tuple((write_roi.offset - self.volume_roi.offset) / self.voxel_size)
        volume_shape = tuple(self.volume_roi.shape / self.voxel_size)
        index = self.block_index(write_roi)
        classes = len(self.channels)
        outputs: dict[str, npt.NDArray] = {}
        for i, channel in enumerate(self.channels):
            params = self.class_parameters(channel)
            pair = prediction[[i, classes + i]]
            mask = seg.class_masks(pair, params.mask_threshold)[0] & inside
            if channel not in self.instance_classes:
                outputs[channel] = mask[crop].astype(np.uint8)
                continue
            distance = seg.predicted_distance(pair[1], self.scale_factor)
            found = seg.block_fragments(
                distance,
                mask,
                params.seed_level,
                origin,
                volume_shape,
                id_offset=index * int(np.prod(self.block_shape)),
            )
            outputs[fragments_name(channel)] = found.labels
            _save_record(record_path(self.output, channel, index), found)
        computed = time.perf_counter()
        for name, data in outputs.items():
            self.write_output(name, write_roi, data)
        written = time.perf_counter()
        return {"read": read - started, "compute": computed - read, "write": written - computed}


@dataclass
class RelabelJob(SegmentJob):
    """Step 3: fragments through the merged table into ``OUT/<class>``."""

    def process(self, write_roi: Roi) -> dict[str, float]:
        started = time.perf_counter()
        seconds = {"read": 0.0, "compute": 0.0, "write": 0.0}
        for channel in self.instance_channels:
            fragments = self.output_volume(fragments_name(channel)).read(write_roi)
            read = time.perf_counter()
            objects = seg.relabel(fragments, self._table(channel))
            computed = time.perf_counter()
            self.write_output(channel, write_roi, objects)
            written = time.perf_counter()
            seconds["read"] += read - started
            seconds["compute"] += computed - read
            seconds["write"] += written - computed
            started = written
        return seconds

    def _table(self, channel: str) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
        key = f"table:{channel}"
        if key not in self._cache:
            with np.load(table_path(self.output, channel)) as stored:
                self._cache[key] = (stored["keys"], stored["values"])
        return self._cache[key]


def _save_record(path: Path, found: seg.Fragments) -> None:
    """The block's fragments without their labels, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(temporary, **{name: getattr(found, name) for name in _RECORD_FIELDS})
    os.replace(temporary, path)


def _load_record(path: Path) -> seg.Fragments:
    with np.load(path) as stored:
        fields = {name: stored[name] for name in _RECORD_FIELDS}
    return seg.Fragments(labels=np.zeros(0, np.uint64), **fields)


def merge(job: SegmentJob, voxel_volume: float) -> dict[str, int]:
    """Step 2: join every block's fragments of each instance class into
    objects and store the tables. Returns the number of objects per class.

    Raises:
        FileNotFoundError: a block's record is missing (its step 1 not done).
    """
    counts = {}
    blocks = int(np.prod(job.markers.grid_shape))
    for channel in job.instance_channels:
        records = [_load_record(record_path(job.output, channel, i)) for i in range(blocks)]
        fragments = zarr.open_array(str(array_path(job.output, fragments_name(channel))), mode="r")

        def resolve(index: npt.NDArray[np.int64], fragments: zarr.Array = fragments) -> npt.NDArray:
            if index.size == 0:
                return np.zeros(0, np.uint64)
            return fragments.get_coordinate_selection(np.unravel_index(index, fragments.shape))

        params = job.class_parameters(channel)
        keys, values = seg.merge_fragments(records, resolve, voxel_volume, params.min_size)
        path = table_path(job.output, channel)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.stem}.tmp.npz")
        np.savez(temporary, keys=keys, values=values)
        os.replace(temporary, path)
        counts[channel] = int(values.max(initial=0))
    return counts


def parameters_dict(
    channels: Sequence[str], parameters: Mapping[str, seg.SegmentParameters]
) -> dict[str, dict[str, Any]]:
    return {c: parameters[c].to_dict() for c in channels}


def plan_segment(
    prediction: str | Path,
    output: str | Path,
    channels: Sequence[str],
    scale_factor: float,
    parameters: Mapping[str, seg.SegmentParameters],
    block_shape: Sequence[int],
    instance_classes: Sequence[str] = seg.DEFAULT_INSTANCE_CLASSES,
    num_workers: int = 1,
    threads: int | None = None,
) -> tuple[FragmentsJob, RelabelJob]:
    """Check the prediction, prepare (or check) every output and return the
    jobs of steps 1 and 3.

    Args:
        prediction: a ``2C``-channel dataset (``container/name``; an output
            group of ``blockwise predict`` or its ``s0``).
        parameters: per class of ``channels``.
        block_shape: write block shape in voxels.

    Raises:
        ValueError: a prediction whose channels do not match ``channels``.
        OutputMismatchError: an existing output or done marker of another run.
    """
    from pipelines.blockwise.outputs import OutputSpec, prepare_outputs
    from pipelines.blockwise.plan import block_size_world, open_input
    from pipelines.blockwise.run import default_threads

    path = Path(prediction)
    if (path / "s0").exists() and (path / ".zgroup").exists():
        path = path / "s0"
    volume = open_input(path, "prediction")
    channels = tuple(channels)
    if volume.channels != 1 or volume.shape[0] != 2 * len(channels):
        raise ValueError(
            f"prediction {path} of shape {volume.shape} does not have 2 x {len(channels)} "
            f"channels (hot and distance) for {list(channels)}"
        )
    missing = [c for c in channels if c not in parameters]
    if missing:
        raise ValueError(f"no segmentation parameters for {missing}")
    block_shape = tuple(int(b) for b in block_shape)
    voxel_size = Coordinate(volume.voxel_size)
    common: dict[str, Any] = {
        "output": os.path.abspath(output),  # workers may start in another directory
        "volume_roi": volume.roi,
        "voxel_size": voxel_size,
        "block_size": block_size_world(block_shape, voxel_size),
        "threads": threads or default_threads(num_workers),
        "prediction": volume,
        "channels": channels,
        "instance_classes": tuple(c for c in channels if c in instance_classes),
        "scale_factor": float(scale_factor),
        "parameters": parameters_dict(channels, parameters),
        "block_shape": block_shape,
    }
    fragments = FragmentsJob(
        task_id="segment",
        context=Coordinate((seg.HALO,) * voxel_size.dims) * voxel_size,
        done_dataset="done/segment",
        **common,
    )
    relabel = RelabelJob(
        task_id="segment_relabel",
        context=Coordinate((0,) * voxel_size.dims),
        done_dataset="done/segment_relabel",
        **common,
    )
    units = volume.units or ("nm",) * voxel_size.dims

    def spec(name: str, dtype: type) -> OutputSpec:
        return OutputSpec(name, (), np.dtype(dtype), volume.roi, voxel_size, units)

    instance = list(fragments.instance_channels)
    first = [spec(c, np.uint8) for c in channels if c not in instance]
    first += [spec(fragments_name(c), np.uint64) for c in instance]
    prepare_outputs(Path(output), first, block_shape, fragments.markers, fragments.signature())
    second = [spec(c, np.uint64) for c in instance]
    prepare_outputs(Path(output), second, block_shape, relabel.markers, relabel.signature())
    return fragments, relabel
