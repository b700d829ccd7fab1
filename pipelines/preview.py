"""Write training batches to zarr and PNG montages, to look at before training.

``python -m pipelines.preview --batches 3 --out runs/preview`` runs the
training data pipeline (sources, augmentations, TargetNode,
DistanceMaskNode, WeightNode; no network) and writes, per batch ``i``:

- ``preview.zarr/batch_<i>/<array>[/<channel>]``: ``raw``, ``gt/<c>``,
  ``mask/<c>``, ``target/hot_<c>``, ``target/dist_<c>``, ``weights/hot_<c>``,
  ``weights/dist_<c>``, ``distance_mask/dist_<c>``: each an OME-NGFF 0.4
  multiscale group with level ``s0`` (also carrying funlib attributes), at
  the WORLD offset where the batch was sampled;
- ``batch_<i>.png``: the central slice of every channel, with colour bars,
  titled with the sample it came from.

``training.augment: false`` shows the data as stored.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
from pathlib import Path

import gunpowder as gp
import numpy as np
from funlib.geometry import Coordinate

from gp_hotdistance.torch.inference import input_shape_for
from pipelines.batches import (
    BatchArray,
    Keys,
    batch_arrays,
    build_data_pipeline,
    generate_demo_data,
    open_data,
    resolve_data,
    write_batch,
)
from pipelines.common import make_model, make_predictor
from pipelines.config import Config, ConfigError, load_config


def write_montage(path: Path, arrays: list[BatchArray], title: str) -> None:
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
    random.seed(config.training.seed)  # gunpowder draws each request's seed from it
    np.random.seed(config.training.seed)
    config = resolve_data(config, out)
    generate_demo_data(config)
    data = open_data(config)
    model = make_model(config, make_predictor(config))
    output_shape = Coordinate(config.model.output_shape)
    input_shape = Coordinate(input_shape_for(model, output_shape))
    keys = Keys.create(config)
    single = config.replace(training=dataclasses.replace(config.training, batch_size=1))
    pipeline, request, _ = build_data_pipeline(
        single, data, keys, input_shape, output_shape, num_workers=0
    )
    zarr_path = out / "preview.zarr"
    written: list[Path] = [zarr_path]
    with gp.build(pipeline):
        for index in range(batches):
            batch = pipeline.request_batch(request)
            arrays = batch_arrays(batch, keys, config)
            write_batch(zarr_path, f"batch_{index}", arrays)
            sample = int(np.asarray(batch[keys.sample].data)[0])
            offset = tuple(arrays[0].offset)
            png = out / f"batch_{index}.png"
            write_montage(png, arrays, f"batch {index}: data.samples[{sample}], raw at {offset}")
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
        print(f"  {path.parent.parent.relative_to(zarr_path)}")
    for path in written[1:]:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
