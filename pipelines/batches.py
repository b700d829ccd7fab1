"""The training data pipeline that ``train`` and ``preview`` share: zarr
sources, augmentations and the three hot-distance nodes, up to ``Stack``.

The pipeline::

    zarr (raw, gt, mask) -> Normalize -> Pad(gt, mask) -> RandomLocation
      -> ElasticAugment -> SimpleAugment -> IntensityAugment
      -> TargetNode -> DistanceMaskNode -> PreCache -> WeightNode -> Unsqueeze -> Stack

``PreCache`` sits before ``WeightNode`` so that the moving class counts live
in the requesting process (``train`` saves them beside every checkpoint).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import gunpowder as gp
import numpy as np
from funlib.geometry import Coordinate

from gp_hotdistance import DistanceMaskNode, TargetNode, WeightNode
from pipelines.common import make_predictor, open_dataset
from pipelines.config import Config, ConfigError

logger = logging.getLogger(__name__)


@dataclass
class Keys:
    """The array keys of the training pipeline."""

    raw: gp.ArrayKey
    gt: gp.ArrayKey
    mask: gp.ArrayKey | None
    target: gp.ArrayKey
    distance_mask: gp.ArrayKey | None
    weights: gp.ArrayKey
    prediction: gp.ArrayKey

    @classmethod
    def create(cls, config: Config) -> Keys:
        return cls(
            raw=gp.ArrayKey("RAW"),
            gt=gp.ArrayKey("GT"),
            mask=gp.ArrayKey("MASK") if config.data.mask else None,
            target=gp.ArrayKey("TARGET"),
            distance_mask=gp.ArrayKey("DISTANCE_MASK") if config.mask_distances else None,
            weights=gp.ArrayKey("WEIGHTS"),
            prediction=gp.ArrayKey("PREDICTION"),
        )


def data_container(config: Config, out: Path) -> Path:
    """The zarr container to train on; generates the demo data if the config
    names none and it is not there yet."""
    if config.data.container is not None:
        path = Path(config.data.container)
        if not path.exists():
            raise ConfigError(f"data.container {path} does not exist")
        return path
    from pipelines.demo_data import make_demo_data

    path = out / "demo_data.zarr"
    if not (path / config.data.eval_gt).exists():
        logger.info("generating demo data in %s", path)
        make_demo_data(path, classes=tuple(config.channels), dims=config.dims)
    return path


def build_data_pipeline(
    config: Config,
    container: Path,
    keys: Keys,
    input_shape: Coordinate,
    output_shape: Coordinate,
    num_workers: int,
) -> tuple[gp.Pipeline, gp.BatchRequest, WeightNode]:
    """Sources, augmentations and the three hot-distance nodes, up to
    ``Stack``; returns the pipeline, its request (raw at ``input_shape``,
    everything else at ``output_shape``, in voxels) and its WeightNode."""
    predictor = make_predictor(config)
    raw = open_dataset(container, config.data.raw)
    gt = open_dataset(container, config.data.gt)
    voxel_size = Coordinate(gt.voxel_size)
    if Coordinate(raw.voxel_size) != voxel_size:
        raise ConfigError(
            f"raw voxel size {raw.voxel_size} differs from gt voxel size {gt.voxel_size}"
        )
    padding = predictor.padding(voxel_size)

    sources = [gp.ArraySource(keys.raw, raw, interpolatable=True), gp.ArraySource(keys.gt, gt)]
    if keys.mask is not None:
        sources.append(gp.ArraySource(keys.mask, open_dataset(container, config.data.mask)))
    pipeline = tuple(sources) + gp.MergeProvider()
    pipeline += gp.Normalize(keys.raw)
    pipeline += gp.Pad(keys.gt, padding)
    if keys.mask is not None:
        pipeline += gp.Pad(keys.mask, padding, value=0)
    pipeline += gp.RandomLocation()
    if config.training.augment:
        # deform and transpose only the trailing axes that share one voxel
        # size (the section plane of anisotropic data)
        isotropic = [a for a in range(voxel_size.dims) if voxel_size[a] == voxel_size[-1]]
        plane = (
            len(isotropic)
            if isotropic == list(range(voxel_size.dims - len(isotropic), voxel_size.dims))
            else 1
        )
        if plane >= 2:
            pipeline += gp.ElasticAugment(
                control_point_spacing=(8,) * plane,
                jitter_sigma=(1.0,) * plane,
                rotation_interval=(0, np.pi / 8),
                spatial_dims=plane,
            )
            pipeline += gp.SimpleAugment(transpose_only=isotropic)
        else:
            pipeline += gp.SimpleAugment(transpose_only=[])
        pipeline += gp.IntensityAugment(keys.raw, 0.9, 1.1, -0.1, 0.1)
    pipeline += TargetNode(predictor, keys.gt, keys.target)
    if keys.distance_mask is not None:
        pipeline += DistanceMaskNode(predictor, keys.target, keys.mask, keys.distance_mask)
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
    return pipeline, request, weight_node
