"""Write a CellMap challenge submission from a trained run.

::

    python -m pipelines.submit --run runs/demo --crops crops.csv --out submission.zarr

Each crop of ``crops.csv`` (see :func:`pipelines.submission.read_crop_rows`:
crop id, raw dataset path, voxel size, translation, shape; optionally a
``class_label`` per row) is predicted with the run's newest model (raw read
with the model's context), segmented with the run's chosen parameters
(``segmentation.json``, else the defaults) and written as
``submission.zarr/cropN/<label>`` on the crop's own grid (voxel size,
translation, shape): instance ids uint64, semantic masks uint8. Then
``submission.zip`` (beside it) packs the container. An existing ``--out``
or zip is never touched: the command refuses to start.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

import zarr

from gp_hotdistance.segment import DEFAULT_INSTANCE_CLASSES
from pipelines.challenge import open_run, run_parameters
from pipelines.config import ConfigError
from pipelines.submission import read_crop_rows, segment_crop, write_label


def zip_path(out: Path) -> Path:
    """Where the zip of ``out`` goes: ``out`` with the suffix ``.zip``."""
    return out.with_suffix(".zip")


def submit(
    run: str | Path,
    crops: str | Path,
    out: str | Path,
    device: str = "cpu",
    instance_classes: tuple[str, ...] = DEFAULT_INSTANCE_CLASSES,
) -> Path:
    """Write the submission container ``out`` and its zip; returns the zip.

    Raises:
        ConfigError: ``out`` or its zip exists, a bad crops file, no model.
    """
    out = Path(out)
    archive = zip_path(out)
    for path in (out, archive):
        if path.exists() or path.is_symlink():
            raise ConfigError(f"{path} exists; not replacing it (choose another --out)")
    rows = read_crop_rows(crops)
    config, _, model, iteration = open_run(run, device)
    parameters = run_parameters(run, config)
    root = zarr.open_group(str(out), mode="w-")
    for row in rows:
        for label, data in segment_crop(
            row, config, model, device, parameters, instance_classes
        ).items():
            write_label(root, row.crop, label, data, row)
        print(f"{row.crop}: {', '.join(row.labels or config.channels)} (iteration {iteration})")
    made = shutil.make_archive(
        str(archive.with_suffix("")), "zip", root_dir=out.parent, base_dir=out.name
    )
    return Path(made)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.submit",
        description="Predict, segment and package crops as a CellMap challenge submission.",
    )
    parser.add_argument("--run", required=True, help="training run directory")
    parser.add_argument(
        "--crops",
        required=True,
        help="CSV with a header: crop, raw, voxel_size, translation, shape [, class_label]",
    )
    parser.add_argument("--out", required=True, help="submission container (must not exist)")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--instance-classes",
        nargs="+",
        default=list(DEFAULT_INSTANCE_CLASSES),
        help="labels written as instance ids (default: the challenge's)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        from pipelines.common import resolve_device

        archive = submit(
            args.run,
            args.crops,
            args.out,
            resolve_device(args.device),
            tuple(args.instance_classes),
        )
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"submission in {args.out}, packed as {archive}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
