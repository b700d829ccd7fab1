"""Output datasets of a blockwise run: their specs, creation and checks,
and the per-block done markers stored with them."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import zarr
from funlib.geometry import Coordinate, Roi

logger = logging.getLogger(__name__)

MAX_CHUNK = 64  # largest chunk edge (voxels) of the prepared outputs
MIN_CHUNK = 16  # smallest chunk edge (voxels) along an axis whose block is longer


class OutputMismatchError(ValueError):
    """An existing output that this run would have to overwrite."""


LEVEL = "s0"  # the one multiscale level of an output group


@dataclass(frozen=True)
class OutputSpec:
    """An output: the OME-NGFF group ``container/name`` with the array
    ``name/s0`` over ``roi``, channels first with one channel per
    ``channel_names``, or spatial only when ``channel_names`` is empty."""

    name: str
    channel_names: tuple[str, ...]
    dtype: np.dtype
    roi: Roi
    voxel_size: Coordinate
    units: tuple[str, ...]

    @property
    def channels(self) -> int:
        return len(self.channel_names)

    @property
    def shape(self) -> tuple[int, ...]:
        spatial = tuple(self.roi.shape / self.voxel_size)
        return (self.channels, *spatial) if self.channels else spatial


def check_output_name(name: str) -> None:
    """Raises ValueError unless ``name`` is a relative path that stays
    inside the output container (no absolute path, ``..``, ``.`` or empty part)."""
    parts = str(name).split("/")
    if str(name).startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(
            f"output dataset name {name!r} must be a relative path inside --output "
            "(no leading '/', no '.' or '..' parts)"
        )


def array_path(container: str | Path, name: str) -> Path:
    """Where the workers write output ``name``: its level array ``name/s0``."""
    return Path(container) / name / LEVEL


def chunk_shape_for(block_shape: Sequence[int]) -> tuple[int, ...]:
    """Per axis, the largest divisor of the block shape that is <= ``MAX_CHUNK``
    (chunks must divide blocks so that no two blocks write the same chunk).

    Raises:
        ValueError: an axis whose largest such divisor is below
            ``min(block, MIN_CHUNK)`` (a block edge with a large prime
            factor would give tiny chunks: many files, much overhead); the
            message suggests block edges that work.
    """
    chunks = []
    for axis, b in enumerate(block_shape):
        chunk = max(d for d in range(1, min(b, MAX_CHUNK) + 1) if b % d == 0)
        if chunk < min(b, MIN_CHUNK):
            lower = b - b % MIN_CHUNK
            upper = lower + MIN_CHUNK
            raise ValueError(
                f"block shape {tuple(block_shape)}: axis {axis} ({b} voxels) has no divisor "
                f"between {MIN_CHUNK} and {MAX_CHUNK}, so its output chunks would be {chunk} "
                f"voxel(s) thick; use a block edge that is a multiple of {MIN_CHUNK}, "
                f"e.g. {lower} or {upper}"
            )
        chunks.append(chunk)
    return tuple(chunks)


def prepare_output(container: Path, spec: OutputSpec, block_shape: Sequence[int]) -> None:
    """Create the OME-NGFF group ``container/spec.name`` (array ``s0``, with
    funlib attributes and ``channel_names``), or check that the existing one
    is exactly what this run writes.

    Raises:
        OutputMismatchError: the existing dataset is not such a group (e.g. a
            plain array of an older layout), or differs in shape, channels,
            voxel size, offset, dtype or has chunks that straddle blocks.
    """
    from gp_hotdistance.data import open_volume, prepare_volume

    path = container / spec.name
    if path.exists():
        try:
            group = zarr.open_group(str(path), mode="r")
            if not isinstance(group.get(LEVEL), zarr.Array) or "multiscales" not in group.attrs:
                raise ValueError(f"no OME-NGFF multiscales group with an array {LEVEL!r}")
            existing = open_volume(path)
            if Path(existing.path) != path / LEVEL:
                raise ValueError(f"its first level is {existing.path}, not {LEVEL}")
        except Exception as error:
            raise OutputMismatchError(
                f"refusing to overwrite {path}: it exists but is not an OME-NGFF output group "
                f"with the array {spec.name}/{LEVEL} ({type(error).__name__}: {error}); "
                "outputs of older runs were plain arrays: remove it or use another --output"
            ) from error
        problems = []
        shape = existing.shape
        first = 1 if spec.channels else 0  # the first spatial axis
        if len(shape) != len(spec.shape) or existing.channels != first:
            problems.append(f"shape {shape}, expected {spec.shape}")
        else:
            if spec.channels and shape[0] != spec.channels:
                problems.append(f"{shape[0]} channels, expected {spec.channels}")
            if shape[first:] != spec.shape[first:]:
                problems.append(f"spatial shape {shape[first:]}, expected {spec.shape[first:]}")
        if existing.voxel_size != spec.voxel_size:
            problems.append(f"voxel size {existing.voxel_size}, expected {spec.voxel_size}")
        if existing.offset != spec.roi.offset:
            problems.append(f"offset {existing.offset}, expected {spec.roi.offset}")
        names = existing.array.attrs.get("channel_names")
        if tuple(names or ()) != spec.channel_names and spec.channels:
            problems.append(f"channel names {names}, expected {list(spec.channel_names)}")
        if np.dtype(existing.dtype) != spec.dtype:
            problems.append(f"dtype {existing.dtype}, expected {spec.dtype}")
        chunks = tuple(existing.array.chunks)[first:]
        if len(chunks) == len(block_shape) and any(
            b % c for b, c in zip(block_shape, chunks, strict=True)
        ):
            problems.append(
                f"chunks {chunks} do not divide the block shape {tuple(block_shape)} "
                "(concurrent blocks would write the same chunk)"
            )
        if problems:
            raise OutputMismatchError(
                f"refusing to overwrite existing dataset {path}: " + "; ".join(problems)
            )
        logger.info("reusing existing dataset %s", path)
        return
    array = prepare_volume(
        str(container),
        spec.name,
        spec.shape,
        spec.dtype,
        spec.voxel_size,
        spec.roi.offset,
        units=spec.units,
        channel_axis=bool(spec.channels),
        chunks=((spec.channels,) if spec.channels else ()) + chunk_shape_for(block_shape),
    )
    if spec.channels:
        array.attrs["channel_names"] = list(spec.channel_names)
        zarr.open_group(str(path), mode="r+").attrs["channel_names"] = list(spec.channel_names)


@dataclass(frozen=True)
class DoneMarkers:
    """One uint8 cell per block in a zarr array (one chunk per cell),
    set after the block's outputs are written."""

    path: str
    begin: Coordinate  # world offset of the first write ROI
    block_size: Coordinate  # world size of a write ROI
    grid_shape: tuple[int, ...]

    def prepare(self, signature: dict[str, Any]) -> None:
        """Create the array, or check that the existing one belongs to a run
        with the same ``signature`` (inputs, parameters, block shape)."""
        path = Path(self.path)
        if path.exists():
            try:
                existing = zarr.open_array(self.path, mode="r")
                stored = existing.attrs.asdict().get("signature")
            except Exception as error:
                raise OutputMismatchError(
                    f"refusing to overwrite {path}: it exists but is not a done-marker array"
                ) from error
            if stored != signature or tuple(existing.shape) != self.grid_shape:
                changed = sorted(
                    k
                    for k in set(signature) | set(stored or {})
                    if (stored or {}).get(k) != signature.get(k)
                )
                raise OutputMismatchError(
                    f"refusing to resume into {path}: it was written by a run with different "
                    f"{', '.join(changed) or 'block grid'} (stored "
                    f"{ {k: (stored or {}).get(k) for k in changed} }, this run "
                    f"{ {k: signature.get(k) for k in changed} }); remove it and the outputs, "
                    "or use another --output"
                )
            return
        array = zarr.open_array(
            self.path,
            mode="w-",
            shape=self.grid_shape,
            chunks=(1,) * len(self.grid_shape),
            dtype=np.uint8,
            fill_value=0,
        )
        array.attrs["signature"] = signature

    def index(self, write_roi: Roi) -> tuple[int, ...]:
        return tuple((write_roi.offset - self.begin) / self.block_size)

    def is_done(self, write_roi: Roi) -> bool:
        return bool(zarr.open_array(self.path, mode="r")[self.index(write_roi)])

    def mark(self, write_roi: Roi) -> None:
        zarr.open_array(self.path, mode="r+")[self.index(write_roi)] = 1

    def done(self) -> npt.NDArray[np.bool_]:
        """The done flag of every block, shaped like the block grid."""
        return zarr.open_array(self.path, mode="r")[...] != 0


def signature_value(value: Any) -> Any:
    """``value`` as plain JSON (tuples to lists), for comparing signatures."""
    return json.loads(json.dumps(value, default=list))


def prepare_outputs(
    container: Path,
    specs: Sequence[OutputSpec],
    block_shape: Sequence[int],
    markers: DoneMarkers,
    signature: dict[str, Any],
) -> None:
    """Check the block shape, every existing output and the done markers
    before creating anything, then create the missing outputs."""
    chunk_shape_for(block_shape)
    for spec in specs:
        check_output_name(spec.name)
    if container.exists() and not container.is_dir():
        raise OutputMismatchError(f"output {container} is a file, not a zarr container")
    parent = next((p for p in container.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise OutputMismatchError(
            f"output {container} cannot be created: {parent} is a file, not a directory"
        )
    container.mkdir(parents=True, exist_ok=True)
    if not (container / ".zgroup").exists():
        zarr.open_group(str(container), mode="a")
    existing = [s for s in specs if (container / s.name).exists()]
    for spec in existing:
        prepare_output(container, spec, block_shape)
    marker_group = Path(markers.path).relative_to(container).parent
    if marker_group != Path("."):
        zarr.open_group(str(container), mode="a").require_group(str(marker_group))
    markers.prepare(signature)
    for spec in specs:
        if spec not in existing:
            prepare_output(container, spec, block_shape)
