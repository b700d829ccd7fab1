"""The training data that ``train`` and ``preview`` share: the config's
samples opened with the data layer, the training dataset and its loader,
and the gunpowder pipeline up to ``Stack`` (previews and the data
benchmark); :mod:`pipelines.batch_io` writes batches (previews and training
snapshots), :mod:`pipelines.data_report` describes the opened data.

The pipeline (:func:`gp_hotdistance.torch.hot_distance_pipeline`)::

    per sample: SampleSource (raw, gt, mask at data.voxel_size)
                -> RandomLabelledLocation (output centre inside a labelled ROI)
    RandomProvider (sample i with probability ~ labelled volume x weight)
      -> ElasticAugment -> SimpleAugment -> IntensityAugment   (training.augment)
      -> TargetNode -> DistanceMaskNode

Training draws it through :func:`make_dataset` and :func:`make_loader`
(``HotDistanceDataset`` in ``DataLoader`` workers; the class balancing runs
in the training process on the device); :func:`build_data_pipeline` adds
``PreCache -> WeightNode -> Unsqueeze -> Stack`` for gunpowder batches.

``gt`` and ``mask`` have one channel per class. A class with no dataset in a
sample, and every voxel outside a sample's labelled ROI, has mask 0 there:
its hot and distance weights are 0 and it adds nothing to the moving counts.
Raw around a crop is real data from the large raw volume.

The demo: a config without a data section (the default) trains on :func:`pipelines.demo_data.make_cellmap_demo` in
``<run directory>/demo_data.zarr``; any ``demo_data.zarr`` container that a
samples-form config names and that does not exist is generated the same way
(``configs/demo_2d.yaml`` names ``runs/demo/demo_data.zarr``). Nothing that
the demo generator did not create is ever written or removed (see
:func:`generate_demo_data`).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import gunpowder as gp
import torch
from funlib.geometry import Coordinate

from gp_hotdistance import WeightNode
from gp_hotdistance.data import Sample
from gp_hotdistance.torch.dataset import HotDistanceDataset, hot_distance_pipeline
from pipelines.common import make_predictor, open_sample
from pipelines.config import Config, ConfigError, SampleConfig, from_dict
from pipelines.stops import worker_keeps_stop_signals

logger = logging.getLogger(__name__)

DEMO_CONTAINER = "demo_data.zarr"


@dataclass
class Keys:
    """The array keys of the training pipeline. ``random_shift`` (the world
    shift from the request to where the batch was read) and ``sample``
    (the index of the sample it came from) are nonspatial."""

    raw: gp.ArrayKey
    gt: gp.ArrayKey
    mask: gp.ArrayKey
    target: gp.ArrayKey
    distance_mask: gp.ArrayKey | None
    weights: gp.ArrayKey
    prediction: gp.ArrayKey
    random_shift: gp.ArrayKey
    sample: gp.ArrayKey

    @classmethod
    def create(cls, config: Config) -> Keys:
        return cls(
            raw=gp.ArrayKey("RAW"),
            gt=gp.ArrayKey("GT"),
            mask=gp.ArrayKey("MASK"),
            target=gp.ArrayKey("TARGET"),
            distance_mask=gp.ArrayKey("DISTANCE_MASK") if config.mask_distances else None,
            weights=gp.ArrayKey("WEIGHTS"),
            prediction=gp.ArrayKey("PREDICTION"),
            random_shift=gp.ArrayKey("RANDOM_SHIFT"),
            sample=gp.ArrayKey("SAMPLE"),
        )


@dataclass
class Data:
    """The opened samples of a config (samples form): the training samples
    with their weights and the evaluation samples; ``where`` and
    ``eval_where`` name each in the config (``data.samples[i]``),
    ``skipped`` lists the unusable samples skipped (``data.skip_unusable``)."""

    voxel_size: Coordinate
    samples: list[Sample]
    weights: list[float]
    eval: list[Sample]
    where: list[str]
    eval_where: list[str]
    skipped: list[str]


def resolve_data(config: Config, out: Path) -> Config:
    """``config`` with a data section: without one (``data: None``, the
    default) the demo in ``out/demo_data.zarr`` (nothing is written here;
    see :func:`generate_demo_data`)."""
    from pipelines.demo_data import make_cellmap_demo

    if config.data is not None:
        return config
    demo = make_cellmap_demo(
        Path(out).absolute() / DEMO_CONTAINER, write=False, **_demo_kwargs(config)
    )
    return config.replace(data=from_dict({"data": demo.data_section()}).data)


def generate_demo_data(config: Config, out: Path | None = None) -> list[Path]:
    """Write the demo into every ``demo_data.zarr`` container that a path of
    ``config`` (samples form) names and that is not complete yet; returns
    the containers written.

    A container is written only where nothing exists yet, or where an
    earlier run wrote the demo (it holds the demo's marker file, see
    :func:`pipelines.demo_data.claim_container`). A complete container
    without the marker is read as it is; an incomplete one is refused and
    left untouched. Generating outside the run directory ``out`` is logged
    as a warning (a config names that place).

    Raises:
        ConfigError: a container that is incomplete and not the demo's.
    """
    from pipelines.demo_data import (
        CROP_BOXES,
        CROPS_PATH,
        MARKER,
        DemoPathError,
        is_demo_container,
        make_cellmap_demo,
    )

    containers = set()
    for sample in _samples(config):
        for path in _paths(sample):
            containers.update(p for p in Path(path).parents if p.name == DEMO_CONTAINER)
    inside = Path(out).absolute() if out is not None else None
    written = []
    for container in sorted(containers):
        # the last class of the last crop is written last: its presence means complete
        last = container / CROPS_PATH / list(CROP_BOXES)[-1] / config.channels[-1] / "s0"
        if last.exists():
            continue
        if os.path.lexists(container) and not is_demo_container(container):
            raise ConfigError(
                f"{container} is named by the config's data paths but lacks "
                f"{last.relative_to(container)}, and it was not written by the demo generator "
                f"(no {MARKER} marker in it): it is left as it is. Point the data paths at your "
                f"data, or at a path that does not exist yet to have the demo generated there"
            )
        if inside is not None and inside in container.absolute().parents:
            logger.info("generating demo data in %s", container)
        else:
            logger.warning("generating the synthetic demo data in %s", container)
        try:
            make_cellmap_demo(container, **_demo_kwargs(config))
        except DemoPathError as error:
            raise ConfigError(str(error)) from None
        written.append(container)
    return written


def _demo_kwargs(config: Config) -> dict:
    voxel_size = getattr(config.data, "voxel_size", None)
    return {
        "voxel_size": voxel_size,
        "classes": tuple(config.channels),
        "dims": config.dims,
        "anisotropic": voxel_size is not None and len(set(voxel_size)) > 1,
    }


def _samples(config: Config) -> list[SampleConfig]:
    data = config.data
    return [*data.samples, *data.eval]


def _paths(sample: SampleConfig) -> list[str]:
    labels = sample.label_datasets
    paths = [sample.raw, *(labels.values() if labels is not None else [sample.labels])]
    return paths + ([sample.mask] if sample.mask is not None else [])


def _named_samples(config: Config) -> list[tuple[str, SampleConfig]]:
    data = config.data
    return [(f"data.samples[{i}]", s) for i, s in enumerate(data.samples)] + [
        (f"data.eval[{i}]", s) for i, s in enumerate(data.eval)
    ]


def sample_paths(config: Config, where: str) -> dict[str, str]:
    """The datasets that the config's sample ``where`` (``data.samples[i]``
    or ``data.eval[i]``) names: ``{"raw": path, "labels.<c>": path, ...}``
    (``"labels"`` for one class-id dataset; ``"mask"`` when given)."""
    return dict(_keyed_paths(dict(_named_samples(config))[where]))


def _keyed_paths(sample: SampleConfig) -> list[tuple[str, str]]:
    """``(key, path)`` of every dataset a config sample names."""
    labels = sample.label_datasets
    keyed = [("raw", sample.raw)]
    if labels is None:
        keyed.append(("labels", sample.labels))
    else:
        keyed += [(f"labels.{c}", p) for c, p in labels.items()]
    if sample.mask is not None:
        keyed.append(("mask", sample.mask))
    return keyed


def missing_paths(config: Config) -> list[str]:
    """``where.key: path`` for every local dataset path of the config's
    samples that does not exist (URLs are not checked)."""
    return [
        f"{where}.{key}: {path}"
        for where, sample in _named_samples(config)
        for key, path in _keyed_paths(sample)
        if "://" not in path and not os.path.exists(path)
    ]


def open_data(config: Config) -> Data:
    """Open every sample of ``config`` (with data, see :func:`resolve_data`).

    Every missing path of every sample is reported in one
    :class:`ConfigError`. A sample that cannot be used (no labelled voxel
    inside its raw volume, no level at an integer ratio to the training
    voxel size, ...) is listed with its index, paths and why: all of them in
    one :class:`ConfigError`, or, with ``data.skip_unusable``, skipped with a
    warning (:attr:`Data.skipped`)."""
    missing = missing_paths(config)
    if missing:
        raise ConfigError(f"{len(missing)} data path(s) do not exist:\n  " + "\n  ".join(missing))
    opened: dict[str, Sample] = {}
    unusable = []
    volumes: dict = {}  # one opened raw volume for the crops of each
    for where, sample in _named_samples(config):
        try:
            opened[where] = open_sample(config, sample, where, volumes=volumes)
        except ConfigError as error:
            paths = ", ".join(f"{k} {p}" for k, p in _keyed_paths(sample))
            why = str(error).removeprefix(f"{where}: ")
            unusable.append(f"{where} ({paths}): {why}")
    if unusable and not config.data.skip_unusable:
        raise ConfigError(
            f"{len(unusable)} sample(s) cannot be used (set data.skip_unusable: true to skip "
            "them):\n  " + "\n  ".join(unusable)
        )
    for line in unusable:
        logger.warning("skipping unusable sample %s", line)
    train = [(w, s) for w, s in _named_samples(config) if w in opened and w.startswith("data.s")]
    if not train:
        raise ConfigError("no training sample can be used:\n  " + "\n  ".join(unusable))
    return Data(
        voxel_size=Coordinate(config.data.voxel_size),
        samples=[opened[w] for w, _ in train],
        weights=[s.weight for _, s in train],
        eval=[s for w, s in opened.items() if w.startswith("data.eval")],
        where=[w for w, _ in train],
        eval_where=[w for w in opened if w.startswith("data.eval")],
        skipped=unusable,
    )


def build_data_pipeline(
    config: Config,
    data: Data,
    keys: Keys,
    input_shape: Coordinate,
    output_shape: Coordinate,
    num_workers: int,
) -> tuple[gp.Pipeline, gp.BatchRequest, WeightNode]:
    """Sources, augmentations and the three hot-distance nodes, up to
    ``Stack``; returns the pipeline, its request (raw at ``input_shape``,
    everything else at ``output_shape``, in voxels) and its WeightNode."""
    predictor = make_predictor(config)
    voxel_size = data.voxel_size
    pipeline = hot_distance_pipeline(
        data.samples,
        predictor,
        keys.raw,
        keys.gt,
        keys.mask,
        keys.target,
        keys.distance_mask,
        augment=config.training.augment,
        weights=data.weights,
        random_shift=keys.random_shift,
        sample_index=keys.sample,
    )
    if num_workers > 0:
        pipeline += gp.PreCache(cache_size=config.training.cache_size, num_workers=num_workers)
    weight_node = WeightNode(
        predictor,
        keys.gt,
        keys.target,
        keys.weights,
        mask=keys.mask,
        distance_mask=keys.distance_mask,
    )
    pipeline += weight_node
    pipeline += gp.Unsqueeze([keys.raw])
    pipeline += gp.Stack(config.training.batch_size)

    request = gp.BatchRequest()
    request.add(keys.raw, input_shape * voxel_size)
    for key in (keys.gt, keys.target, keys.weights, keys.mask, keys.distance_mask):
        if key is not None:
            request.add(key, output_shape * voxel_size)
    request[keys.random_shift] = gp.ArraySpec(nonspatial=True)
    request[keys.sample] = gp.ArraySpec(nonspatial=True)
    return pipeline, request, weight_node


def make_dataset(
    config: Config,
    data: Data,
    input_shape: Coordinate,
    output_shape: Coordinate,
    rank: int | None = None,
) -> HotDistanceDataset:
    """The training samples of ``config`` as a :class:`HotDistanceDataset`
    (seeded with ``training.seed``, augmented by ``training.augment``, the
    samples' weights); its errors become :class:`ConfigError` s naming a
    sample as the config does (``data.samples[i]``, its index in the config
    even when unusable samples before it were skipped, and its paths)."""
    try:
        return HotDistanceDataset(
            data.samples,
            make_predictor(config),
            data.voxel_size,
            input_shape,
            output_shape,
            augment=config.training.augment,
            seed=config.training.seed,
            weights=data.weights,
            rank=rank,
        )
    except ValueError as error:
        message = str(error)
        found = re.match(r"HotDistanceDataset: samples\[(\d+)\] ", message)
        if found is not None:
            index = int(found.group(1))
            where = data.where[index]
            paths = ", ".join(f"{k} {p}" for k, p in sample_paths(config, where).items())
            rest = message[found.end() :].removeprefix(f"({data.samples[index]!r}) ")
            message = f"{where} ({paths}) {rest}"
        raise ConfigError(message) from None


def make_loader(
    config: Config, dataset: HotDistanceDataset, pin_memory: bool = False
) -> torch.utils.data.DataLoader:
    """A ``DataLoader`` of ``training.batch_size`` with ``training.num_workers``
    worker processes (0: in this process) that keep about
    ``training.cache_size`` batches ready between them. Workers started
    inside :class:`pipelines.stops.StopSignals` ignore SIGINT and SIGTERM:
    the trainer stops them when it stops."""
    workers = config.training.num_workers
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=config.training.batch_size,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        prefetch_factor=-(-config.training.cache_size // workers) if workers else None,
        worker_init_fn=worker_keeps_stop_signals,  # a group's SIGTERM stops the trainer alone
    )
