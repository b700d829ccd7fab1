"""Write training batches to zarr and PNG montages, to look at before training.

``python -m pipelines.preview --batches 3 --out runs/preview`` runs the
training data pipeline (sources, augmentations, TargetNode,
DistanceMaskNode, WeightNode; no network) and writes, per batch ``i``:

- ``preview.zarr/batch_<i>/<array>[/<channel>]``: ``raw``, ``gt/<c>``,
  ``mask/<c>``, ``target/hot_<c>``, ``target/dist_<c>``, ``weights/hot_<c>``,
  ``weights/dist_<c>``, ``distance_mask/dist_<c>``: each an OME-NGFF 0.4
  multiscale group with level ``s0`` (also carrying funlib attributes), at
  the WORLD offset where the batch was sampled;
- ``preview.zarr/batch_<i>`` attributes: ``sample`` (its index among the
  training samples), ``where`` (``data.samples[k]``) and ``datasets`` (the
  paths of its raw, labels and mask);
- ``batch_<i>.png``: raw with the output region boxed, then a row per class
  and a column per kind (gt, mask, hot and distance target, hot and
  distance weight, distance mask) over the output region (3-D: its central
  section), each column on one fixed colour scale; single-valued panels say
  so in the title; titled with the sample it came from;
- ``.gp_hotdistance_preview``: the list of what it wrote; the next preview
  into the same ``--out`` replaces those and refuses files of these names
  that no preview wrote.

``training.augment: false`` shows the data as stored.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import gunpowder as gp
import numpy as np
import zarr
from funlib.geometry import Coordinate, Roi

from gp_hotdistance.geometry import roi_slices
from gp_hotdistance.torch.inference import input_shape_for
from pipelines.batch_io import BatchArray, batch_arrays, refuse_links, write_batch
from pipelines.batches import (
    Keys,
    build_data_pipeline,
    generate_demo_data,
    open_data,
    resolve_data,
    sample_paths,
)
from pipelines.common import data_error, make_model, make_predictor
from pipelines.config import Config, ConfigError, load_config
from pipelines.data_report import describe_data


@dataclass(frozen=True)
class Panel:
    """One montage panel: its title and the 2-D image shown."""

    title: str
    image: np.ndarray


#: The montage's columns: (title, array name pattern, colour map, value range;
#: ``None``: from 0 to the largest weight of the batch).
KINDS = (
    ("gt", "gt/{c}", "gray", (0.0, 1.0)),
    ("mask", "mask/{c}", "gray", (0.0, 1.0)),
    ("hot target", "target/hot_{c}", "gray", (0.0, 1.0)),
    ("distance target", "target/dist_{c}", "RdBu_r", (-1.0, 1.0)),
    ("hot weight", "weights/hot_{c}", "viridis", None),
    ("distance weight", "weights/dist_{c}", "viridis", None),
    ("distance mask", "distance_mask/dist_{c}", "gray", (0.0, 1.0)),
)


@dataclass(frozen=True)
class Montage:
    """What a batch montage shows: ``raw`` (one 2-D section over raw's whole
    ROI) with the output region ``box`` = ``(row, column, rows, columns)``
    in its pixels, and ``panels[(class row, kind column)]`` over the output
    region, for the ``classes`` and ``kinds`` (titles of :data:`KINDS`) the
    batch holds."""

    raw: np.ndarray
    box: tuple[int, int, int, int]
    classes: list[str]
    kinds: list[str]
    panels: dict[tuple[int, int], Panel]


def _roi(array: BatchArray) -> Roi:
    return Roi(array.offset, Coordinate(array.data.shape) * array.voxel_size)


def montage_grid(arrays: list[BatchArray], classes: list[str]) -> Montage:
    """Arrange one batch as a :class:`Montage`: a row per class, a column per
    kind, every panel over the same world region (the output ROI, where the
    arrays other than raw meet); 3-D arrays show the section through the
    centre of that region, raw the same section over its whole ROI. A panel
    whose values are all equal says so, e.g. ``weights/dist_er (all 0)``."""
    by_name = {a.name: a for a in arrays}
    raw = by_name["raw"]
    outputs = [a for a in arrays if a.name != "raw"]
    region = _roi(outputs[0])
    for array in outputs[1:]:
        region = region.intersect(_roi(array))
    inner = roi_slices(region, _roi(raw), raw.voxel_size)  # the region in raw's voxels
    raw_image = raw.data
    if region.dims == 3:  # the section through the region's centre
        raw_image = raw.data[inner[0].start + (inner[0].stop - inner[0].start) // 2]
    box = (
        inner[-2].start,
        inner[-1].start,
        inner[-2].stop - inner[-2].start,
        inner[-1].stop - inner[-1].start,
    )
    kinds = [
        k for k, pattern, _, _ in KINDS if any(pattern.format(c=c) in by_name for c in classes)
    ]
    panels = {}
    for row, c in enumerate(classes):
        for column, kind in enumerate(kinds):
            pattern = next(p for k, p, _, _ in KINDS if k == kind)
            array = by_name.get(pattern.format(c=c))
            if array is None:
                continue
            data = array.data[roi_slices(region, _roi(array), array.voxel_size)]
            image = data if data.ndim == 2 else data[data.shape[0] // 2]
            title = array.name
            if image.size and image.min() == image.max():
                title += f" (all {image.flat[0]:g})"
            panels[(row, column)] = Panel(title, image)
    return Montage(raw_image, box, list(classes), kinds, panels)


def write_montage(path: Path, arrays: list[BatchArray], title: str, classes: list[str]) -> None:
    """Draw :func:`montage_grid`: raw with the output box on the left, then
    a row per class and a column per kind, each column on one fixed colour
    scale (0..1, -1..1 for distances, 0..the largest weight for weights)
    with its colour bar, every panel framed so that a uniform one still
    shows as a panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    montage = montage_grid(arrays, classes)
    rows, columns = len(montage.classes), len(montage.kinds)
    weights = [a.data for a in arrays if a.name.startswith("weights/")]
    top = max([float(np.max(w)) for w in weights if w.size] + [1e-6])
    figure = plt.figure(figsize=(2.3 * (columns + 1.6), 2.3 * rows + 1.2), layout="constrained")
    grid = figure.add_gridspec(rows, columns + 1, width_ratios=[1.6] + [1] * columns)
    axis = figure.add_subplot(grid[:, 0])
    axis.imshow(montage.raw.astype(np.float32), cmap="gray", interpolation="nearest")
    r, c, h, w = montage.box
    axis.add_patch(Rectangle((c - 0.5, r - 0.5), w, h, fill=False, edgecolor="yellow", lw=1.5))
    axis.set_title("raw (box: the output region)", fontsize=9)
    axis.set_xticks([])
    axis.set_yticks([])
    for column, kind in enumerate(montage.kinds):
        _, _, cmap, value_range = next(k for k in KINDS if k[0] == kind)
        vmin, vmax = value_range if value_range is not None else (0.0, top)
        shown = None
        for row in range(rows):
            axis = figure.add_subplot(grid[row, column + 1])
            axis.set_xticks([])
            axis.set_yticks([])
            if column == 0:
                axis.set_ylabel(montage.classes[row], fontsize=10)
            panel = montage.panels.get((row, column))
            if panel is None:
                axis.set_title(f"{kind}: none", fontsize=8)
                continue
            shown = axis.imshow(
                panel.image.astype(np.float32),
                cmap=cmap,
                vmin=vmin,
                vmax=vmax,
                interpolation="nearest",
            )
            axis.set_title(panel.title, fontsize=8)
        if shown is not None:
            figure.colorbar(shown, ax=axis, location="bottom", shrink=0.9, label=kind)
    figure.suptitle(title, fontsize=10)
    figure.savefig(path, dpi=80)
    plt.close(figure)


RECORD = ".gp_hotdistance_preview"
"""The file in ``--out`` listing what previews wrote there (JSON)."""


def _claim_outputs(out: Path, zarr_path: Path, batches: int) -> None:
    """Make room for ``batches`` batches in ``out``: remove what an earlier
    preview wrote (listed in :data:`RECORD`) and record what this one will
    write, before writing it. Anything else of the preview's names
    (``preview.zarr``, ``preview.zarr/batch_*``, ``batch_*.png``) is refused
    with a :class:`ConfigError` and left untouched."""
    record = out / RECORD
    try:
        earlier = set(json.loads(record.read_text())["written"]) if record.is_file() else set()
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{record} is not a preview record: {error}") from None
    found = sorted(zarr_path.glob("batch_*")) + sorted(out.glob("batch_*.png"))
    if os.path.lexists(zarr_path):
        found.insert(0, zarr_path)
    foreign = [p for p in found if str(p.relative_to(out)) not in earlier]
    if foreign:
        raise ConfigError(
            f"{foreign[0]} was not written by an earlier preview (it is not listed in "
            f"{record}): it is left as it is; choose another --out, or move it away"
        )
    for path in found[::-1]:
        if path == zarr_path:
            continue  # kept: this preview writes into it again
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    names = ["preview.zarr"] + [
        name for i in range(batches) for name in (f"preview.zarr/batch_{i}", f"batch_{i}.png")
    ]
    temporary = out / f".{RECORD}.{os.getpid()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    with os.fdopen(os.open(temporary, flags, 0o666), "w") as file:
        json.dump({"written": names}, file)
    os.replace(temporary, record)


def preview(config: Config, out: Path, batches: int) -> list[Path]:
    """Write ``batches`` batches; returns the files and folders written. The
    batches of an earlier preview in ``out`` (``preview.zarr/batch_*`` and
    ``batch_*.png``, as listed in its :data:`RECORD`) are removed first, so
    that ``out`` holds this preview alone; files of those names that no
    preview wrote are refused, and nothing else in ``out`` is touched; nor
    is anything through a symbolic link in ``preview.zarr`` (refused)."""
    zarr_path = out / "preview.zarr"
    for path, what in ((out, "--out"), (zarr_path, "the preview container")):
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{what} {path} is a file, not a directory")
    refuse_links(out, zarr_path.name)
    out.mkdir(parents=True, exist_ok=True)
    _claim_outputs(out, zarr_path, batches)
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
            where = data.where[sample]
            group = zarr.open_group(str(zarr_path / f"batch_{index}"), mode="a")
            group.attrs.update(
                {"sample": sample, "where": where, "datasets": sample_paths(config, where)}
            )
            offset = tuple(arrays[0].offset)
            png = out / f"batch_{index}.png"
            title = f"batch {index}: {where} ({_labels_name(sample_paths(config, where))}), raw at {offset}"
            write_montage(png, arrays, title, list(config.channels))
            written.append(png)
    return written


def _labels_name(datasets: dict[str, str]) -> str:
    """A short name for a sample's labels: the folder holding its per-class
    datasets (``groundtruth/crop2``), or its class-id dataset's name."""
    labels = [path for key, path in datasets.items() if key.startswith("labels")]
    if "labels" in datasets:
        return Path(datasets["labels"]).name
    folder = Path(os.path.commonpath(labels) if len(labels) > 1 else Path(labels[0]).parent)
    return "/".join(folder.parts[-2:])


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
    zarr_path = written[0].resolve()
    groups = sorted(p.name for p in zarr_path.iterdir() if (p / "raw").is_dir())
    print(
        f"wrote {zarr_path}: {', '.join(groups)} (raw, and gt, mask, target, weights"
        f"{', distance_mask' if config.mask_distances else ''} per class; open with "
        f"python -m pipelines.view {zarr_path.parent})"
    )
    for path in written[1:]:
        print(f"wrote {path.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
