"""Write training batches to zarr and PNG montages, to look at before training.

``python -m pipelines.preview --batches 3 --out runs/preview`` runs the
training data pipeline (sources, augmentations, TargetNode,
DistanceMaskNode, WeightNode; no network) and writes, per batch ``i``:

- ``preview.zarr/batch_<i>/<array>[/<channel>]``: ``raw``, ``gt/<c>``,
  ``mask/<c>``, ``target/hot_<c>``, ``target/dist_<c>``, ``weights/hot_<c>``,
  ``weights/dist_<c>``, ``distance_mask/dist_<c>``: each an OME-NGFF 0.4
  multiscale group with level ``s0`` (also carrying funlib attributes), at
  the WORLD offset where the batch was sampled;
- ``batch_<i>.png``: every channel over the output ROI (3-D: its central
  section), with colour bars; single-valued channels say so in the title;
  titled with the sample it came from.

``training.augment: false`` shows the data as stored.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import gunpowder as gp
import numpy as np
from funlib.geometry import Coordinate, Roi

from gp_hotdistance.geometry import roi_slices
from gp_hotdistance.torch.inference import input_shape_for
from pipelines.batches import (
    BatchArray,
    Keys,
    batch_arrays,
    build_data_pipeline,
    describe_data,
    generate_demo_data,
    open_data,
    resolve_data,
    write_batch,
)
from pipelines.common import data_error, make_model, make_predictor
from pipelines.config import Config, ConfigError, load_config


@dataclass(frozen=True)
class Panel:
    """One montage panel: its title and the 2-D image shown."""

    title: str
    image: np.ndarray


def montage_panels(arrays: list[BatchArray]) -> list[Panel]:
    """One panel per array, all showing the same world region: each array is
    cropped to the intersection of the arrays' ROIs (the output ROI; raw is
    larger by the network's context), and 3-D arrays show their central
    section of it. A panel whose values are all equal says so in its title,
    e.g. ``weights/dist_er (all 0)``."""
    rois = [Roi(a.offset, Coordinate(a.data.shape) * a.voxel_size) for a in arrays]
    region = rois[0]
    for roi in rois[1:]:
        region = region.intersect(roi)
    panels = []
    for array, roi in zip(arrays, rois, strict=True):
        data = array.data[roi_slices(region, roi, array.voxel_size)]
        image = data if data.ndim == 2 else data[data.shape[0] // 2]
        title = array.name
        if data.size and data.min() == data.max():
            title += f" (all {data.flat[0]:g})"
        panels.append(Panel(title, image))
    return panels


def write_montage(path: Path, arrays: list[BatchArray], title: str) -> None:
    """The panels of :func:`montage_panels`, with colour bars (none on a
    single-valued panel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = montage_panels(arrays)
    columns = min(4, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.2 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, panel, array in zip(axes.flat, panels, arrays, strict=False):
        signed = array.name.startswith("target/dist_")
        shown = axis.imshow(
            panel.image.astype(np.float32),
            cmap="RdBu_r" if signed else "gray",
            vmin=-1 if signed else None,
            vmax=1 if signed else None,
            interpolation="nearest",
        )
        axis.set_title(panel.title, fontsize=9)
        if "(all " not in panel.title:
            figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.04)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def preview(config: Config, out: Path, batches: int) -> list[Path]:
    """Write ``batches`` batches; returns the files and folders written. The
    batches of an earlier preview in ``out`` (``preview.zarr/batch_*`` and
    ``batch_*.png``) are removed first, so that ``out`` holds this preview
    alone; nothing else in ``out`` is touched."""
    zarr_path = out / "preview.zarr"
    for path, what in ((out, "--out"), (zarr_path, "the preview container")):
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{what} {path} is a file, not a directory")
    out.mkdir(parents=True, exist_ok=True)
    stale = sorted(zarr_path.glob("batch_*")) + sorted(out.glob("batch_*.png"))
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    random.seed(config.training.seed)  # gunpowder draws each request's seed from it
    np.random.seed(config.training.seed)
    config = resolve_data(config, out)
    generate_demo_data(config, out)
    data = open_data(config)
    model = make_model(config, make_predictor(config))
    output_shape = Coordinate(config.model.output_shape)
    input_shape = Coordinate(input_shape_for(model, output_shape))
    print("\n".join(describe_data(config, data, input_shape)), flush=True)
    keys = Keys.create(config)
    single = config.replace(training=dataclasses.replace(config.training, batch_size=1))
    pipeline, request, _ = build_data_pipeline(
        single, data, keys, input_shape, output_shape, num_workers=0
    )
    written: list[Path] = [zarr_path]
    with gp.build(pipeline):
        for index in range(batches):
            batch = pipeline.request_batch(request)
            arrays = batch_arrays(batch, keys, config)
            write_batch(zarr_path, f"batch_{index}", arrays)
            sample = int(np.asarray(batch[keys.sample].data)[0])
            offset = tuple(arrays[0].offset)
            png = out / f"batch_{index}.png"
            write_montage(png, arrays, f"batch {index}: {data.where[sample]}, raw at {offset}")
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
    except Exception as error:  # a refused value, raised inside the data pipeline
        message = data_error(error)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    zarr_path = written[0]
    print(f"wrote {zarr_path}:")
    for index in range(args.batches):
        for path in sorted((zarr_path / f"batch_{index}").rglob(".zarray")):
            print(f"  {path.parent.parent.relative_to(zarr_path)}")
    for path in written[1:]:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
