"""Write training batches to zarr and PNG montages, to look at before training.

``python -m pipelines.preview --batches 3 --out runs/preview`` runs the
training data pipeline (sources, augmentations, TargetNode,
DistanceMaskNode, WeightNode; no network) and writes, per batch ``i``:

- ``preview.zarr/batch_<i>/<array>[/<channel>]``: raw, gt, mask, target,
  weights and distance mask, one dataset per named channel (``hot_mito``,
  ``dist_mito``, ...), each with voxel size, offset and axis names that
  ``funlib.persistence.open_ds`` and neuroglancer read;
- ``batch_<i>.png``: the central slice of every channel, with colour bars.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import gunpowder as gp
import numpy as np
from funlib.geometry import Coordinate
from funlib.persistence import prepare_ds

from gp_hotdistance.torch.inference import input_shape_for
from pipelines.batches import Keys, build_data_pipeline, data_container
from pipelines.common import make_model, make_predictor
from pipelines.config import Config, ConfigError, load_config

SPATIAL_AXES = {2: ["y", "x"], 3: ["z", "y", "x"]}


@dataclass(frozen=True)
class PreviewArray:
    """One channel (or channel-less array) of a preview batch."""

    name: str
    data: np.ndarray
    offset: Coordinate
    voxel_size: Coordinate


def batch_arrays(batch: gp.Batch, keys: Keys, config: Config) -> list[PreviewArray]:
    """Split the arrays of a stacked batch (sample 0) into named channels."""
    predictor = make_predictor(config)
    names = predictor.output_array_type.channels
    hot_names = [f"hot_{c}" for c in config.channels]
    dist_names = [f"dist_{c}" for c in config.channels]
    layout = [
        (keys.raw, "raw", None),
        (keys.gt, "gt", list(config.channels)),
        (keys.mask, "mask", None),
        (keys.target, "target", list(names)),
        (keys.weights, "weights", hot_names + dist_names),
        (keys.distance_mask, "distance_mask", dist_names),
    ]
    arrays = []
    for key, name, channels in layout:
        if key is None or key not in batch:
            continue
        array = batch[key]
        data = np.asarray(array.data)[0]  # first sample of the stack
        spec = array.spec
        dims = spec.voxel_size.dims
        data = data.reshape((-1,) + data.shape[-dims:])
        if channels is None or data.shape[0] != len(channels):
            if data.shape[0] == 1:
                arrays.append(PreviewArray(name, data[0], spec.roi.offset, spec.voxel_size))
                continue
            channels = [str(i) for i in range(data.shape[0])]
        for channel, values in zip(channels, data, strict=True):
            arrays.append(
                PreviewArray(f"{name}/{channel}", values, spec.roi.offset, spec.voxel_size)
            )
    return arrays


def write_zarr(container: Path, group: str, arrays: list[PreviewArray]) -> list[str]:
    """Write each array as ``container/group/name`` with funlib metadata."""
    written = []
    for array in arrays:
        dims = array.voxel_size.dims
        dataset = prepare_ds(
            str(container / group / array.name),
            shape=array.data.shape,
            offset=array.offset,
            voxel_size=array.voxel_size,
            axis_names=SPATIAL_AXES[dims],
            units=["nm"] * dims,
            dtype=array.data.dtype,
            mode="w",
        )
        dataset[dataset.roi] = array.data
        written.append(f"{group}/{array.name}")
    return written


def write_montage(path: Path, arrays: list[PreviewArray], title: str) -> None:
    """Central slice (2-D: the image) of every array, with colour bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(4, len(arrays))
    rows = -(-len(arrays) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.2 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, array in zip(axes.flat, arrays, strict=False):
        image = array.data if array.data.ndim == 2 else array.data[array.data.shape[0] // 2]
        signed = array.name.startswith("target/dist_")
        shown = axis.imshow(
            image.astype(np.float32),
            cmap="RdBu_r" if signed else "gray",
            vmin=-1 if signed else None,
            vmax=1 if signed else None,
            interpolation="nearest",
        )
        axis.set_title(array.name, fontsize=9)
        figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.04)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def preview(config: Config, out: Path, batches: int) -> list[Path]:
    """Write ``batches`` batches; returns the files and folders written."""
    out.mkdir(parents=True, exist_ok=True)
    container = data_container(config, out)
    predictor = make_predictor(config)
    model = make_model(config, predictor)
    output_shape = Coordinate(config.model.output_shape)
    input_shape = Coordinate(input_shape_for(model, output_shape))
    keys = Keys.create(config)
    single = config.replace(training=dataclasses.replace(config.training, batch_size=1))
    pipeline, request, _ = build_data_pipeline(
        single, container, keys, input_shape, output_shape, num_workers=0
    )
    zarr_path = out / "preview.zarr"
    written: list[Path] = [zarr_path]
    with gp.build(pipeline):
        for index in range(batches):
            batch = pipeline.request_batch(request)
            arrays = batch_arrays(batch, keys, config)
            write_zarr(zarr_path, f"batch_{index}", arrays)
            png = out / f"batch_{index}.png"
            write_montage(png, arrays, f"batch {index}")
            written.append(png)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.preview",
        description="Write training batches (raw, gt, mask, target, weights, distance mask) "
        "to a zarr container and PNG montages.",
    )
    parser.add_argument("--batches", type=int, default=3, help="number of batches (default 3)")
    parser.add_argument("--out", default="runs/preview", help="output directory")
    parser.add_argument("--config", help="JSON or YAML config, as for pipelines.train")
    args = parser.parse_args(argv)
    try:
        if args.batches < 1:
            raise ConfigError(f"--batches must be >= 1, got {args.batches}")
        config = load_config(args.config)
        written = preview(config, Path(args.out), args.batches)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    zarr_path = written[0]
    print(f"wrote {zarr_path}:")
    for path in sorted(p for p in zarr_path.rglob(".zarray")):
        print(f"  {path.parent.relative_to(zarr_path)}")
    for path in written[1:]:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
