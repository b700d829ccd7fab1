"""A torch ``IterableDataset`` of hot-distance training samples.

Each item is one random sample of the gunpowder pipeline
:func:`hot_distance_pipeline` builds (sampling, augmentation, ``TargetNode``,
``DistanceMaskNode``), as a dict of CPU tensors; a ``DataLoader`` stacks them
into batches and class balancing happens on the device
(:class:`~gp_hotdistance.torch.BalancedWeights`)::

    raw    |<-(in-out)//2->|<------ output region ------>|<-...->|  input_shape voxels
    gt, mask, target, distance_mask      |<-- output_shape -->|
                                         ^ offset (world units)

Streams: item ``n`` of the stream of (rank ``r``, worker ``w``) is drawn with
the gunpowder request seed ``SeedSequence([seed, r, w, n])`` (32 bits), so
every worker of every rank draws its own stream and a fixed ``seed`` (with
the same workers and ranks) repeats it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence

import gunpowder as gp
import numpy as np
import torch
from funlib.geometry import Coordinate, Roi

from gp_hotdistance.data.nodes import sample_sources
from gp_hotdistance.data.sample import Sample
from gp_hotdistance.nodes import DistanceMaskNode, TargetNode
from gp_hotdistance.predictor import HotDistancePredictor

#: ElasticAugment of :func:`hot_distance_pipeline` (voxels, radians).
CONTROL_POINT_SPACING = 8
JITTER_SIGMA = 1.0
ROTATION_MAX = math.pi / 8


def augmented_axes(voxel_size: Coordinate) -> tuple[list[int], int]:
    """The axes ``SimpleAugment`` may transpose (the trailing axes sharing
    the last axis' voxel size, the section plane of anisotropic data) and
    the number of trailing axes ``ElasticAugment`` deforms (that plane, or 0
    when it has fewer than two axes)."""
    isotropic = [a for a in range(voxel_size.dims) if voxel_size[a] == voxel_size[-1]]
    if isotropic != list(range(voxel_size.dims - len(isotropic), voxel_size.dims)):
        isotropic = [voxel_size.dims - 1]
    return (isotropic, len(isotropic)) if len(isotropic) >= 2 else ([], 0)


def hot_distance_pipeline(
    samples: Sequence[Sample],
    predictor: HotDistancePredictor,
    raw: gp.ArrayKey,
    gt: gp.ArrayKey,
    mask: gp.ArrayKey,
    target: gp.ArrayKey,
    distance_mask: gp.ArrayKey | None = None,
    augment: bool = True,
    weights: Sequence[float] | None = None,
    random_shift: gp.ArrayKey | None = None,
    sample_index: gp.ArrayKey | None = None,
) -> gp.Pipeline:
    """``sample_sources -> augmentations -> TargetNode -> DistanceMaskNode``.

    The augmentations (``augment``): an elastic deformation (rotation up to
    :data:`ROTATION_MAX`) and transposes of the axes of
    :func:`augmented_axes` (the section plane of anisotropic data), mirrors
    of every axis, and raw intensity scale 0.9-1.1 and shift -0.1-0.1. Raw
    is 0 beyond each raw volume (``sample_sources``' ``pad``).
    ``distance_mask`` is required exactly when ``predictor.mask_distances``.
    The other arguments are those of
    :func:`gp_hotdistance.data.sample_sources`.
    """
    pipeline = sample_sources(
        samples,
        raw,
        gt,
        mask,
        weights=weights,
        random_shift=random_shift,
        sample_index=sample_index,
    )
    if augment:
        transposed, plane = augmented_axes(samples[0].voxel_size)
        if plane >= 2:
            pipeline += gp.ElasticAugment(
                control_point_spacing=(CONTROL_POINT_SPACING,) * plane,
                jitter_sigma=(JITTER_SIGMA,) * plane,
                rotation_interval=(0, ROTATION_MAX),
                spatial_dims=plane,
            )
            pipeline += gp.SimpleAugment(transpose_only=transposed)
        else:
            pipeline += gp.SimpleAugment(transpose_only=[])
        pipeline += gp.IntensityAugment(raw, 0.9, 1.1, -0.1, 0.1)
    pipeline += TargetNode(predictor, gt, target)
    if distance_mask is not None:
        pipeline += DistanceMaskNode(predictor, target, mask, distance_mask)
    return pipeline


def _shape(value: Sequence[int], dims: int, name: str) -> Coordinate:
    shape = tuple(value)
    if len(shape) != dims or not all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in shape
    ):
        raise ValueError(f"HotDistanceDataset: {name} must be {dims} positive ints, got {value!r}")
    return Coordinate(int(s) for s in shape)


def _default_rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


class HotDistanceDataset(torch.utils.data.IterableDataset):
    """An infinite stream of random training samples as dicts of tensors.

    Each item holds, for one sample drawn by :func:`hot_distance_pipeline`
    (``C`` classes, shapes in voxels)::

        raw            float32 (1, *input_shape)    intensities (integers / dtype max),
                                                    0 beyond the raw volume
        gt             uint8   (C, *output_shape)   one binary channel per class
        target         float32 (2C, *output_shape)  [hot x C, tanh(d / scale) x C]
        mask           uint8   (C, *output_shape)   1 = known
        distance_mask  uint8   (C, *output_shape)   all ones without mask_distances
        sample         int64   ()                   index into ``samples``
        offset         int64   (dims,)              world offset of the output region

    Raw starts ``(input_shape - output_shape) // 2`` voxels before ``offset``.
    The offset is where the sample was read before augmentation. Feed
    ``target``, ``mask`` and ``distance_mask`` of a batch to
    :class:`~gp_hotdistance.torch.BalancedWeights` for the loss weights.

    Every (rank, worker) draws its own stream (see the module docs); the
    gunpowder pipeline is built in the process that iterates, so the
    dataset works with ``DataLoader`` workers under fork and spawn.

    Args:
        samples: The training samples, all at ``voxel_size``.
        predictor: Gives the target and distance mask.
        voxel_size: The training voxel size (world units).
        input_shape, output_shape: Raw and output shapes in voxels.
        augment: Elastic, mirror/transpose and intensity augmentation.
        seed: Base seed of the streams; ``None`` draws one from the OS.
        weights: Per-sample sampling weights (sample ``i`` is drawn with
            probability proportional to its labelled volume times
            ``weights[i]``; default 1).
        rank: The stream's rank; ``None``: torch.distributed's rank when the
            dataset is created (0 without a process group).

    Raises:
        ValueError: no samples, a sample at another voxel size, shapes of the
            wrong length, or an output larger than the input.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        predictor: HotDistancePredictor,
        voxel_size: Sequence[int],
        input_shape: Sequence[int],
        output_shape: Sequence[int],
        augment: bool = True,
        seed: int | None = None,
        weights: Sequence[float] | None = None,
        rank: int | None = None,
    ) -> None:
        super().__init__()
        self.samples = list(samples)
        if not self.samples:
            raise ValueError("HotDistanceDataset: no samples")
        self.voxel_size = Coordinate(voxel_size)
        dims = self.voxel_size.dims
        for i, sample in enumerate(self.samples):
            if sample.voxel_size != self.voxel_size:
                raise ValueError(
                    f"HotDistanceDataset: samples[{i}] ({sample}) is at voxel size "
                    f"{tuple(sample.voxel_size)}, not {tuple(self.voxel_size)}"
                )
        self.input_shape = _shape(input_shape, dims, "input_shape")
        self.output_shape = _shape(output_shape, dims, "output_shape")
        if not self.input_shape >= self.output_shape:
            raise ValueError(
                f"HotDistanceDataset: output_shape {tuple(self.output_shape)} is larger than "
                f"input_shape {tuple(self.input_shape)}"
            )
        self.predictor = predictor
        self.augment = bool(augment)
        self.seed = int(np.random.SeedSequence().entropy % 2**63) if seed is None else int(seed)
        self.weights = None if weights is None else [float(w) for w in weights]
        self.rank = _default_rank() if rank is None else int(rank)
        self.start = (0, 1)

    @property
    def context(self) -> Coordinate:
        """Voxels of raw before the output region on each axis."""
        return (self.input_shape - self.output_shape) / 2

    def resume(self, batches: int, batch_size: int) -> None:
        """Continue the streams after the ``batches`` batches of
        ``batch_size`` that a ``DataLoader`` over this dataset (with the same
        ``num_workers``) has taken: its next batch is then the one it would
        have given next. A loader's batch ``j`` comes from worker
        ``j % num_workers``."""
        if batches < 0 or batch_size < 1:
            raise ValueError(
                f"resume: need batches >= 0 and batch_size >= 1, got {batches}, {batch_size}"
            )
        self.start = (int(batches), int(batch_size))

    def _stream(self, worker: int, workers: int) -> tuple[int, int]:
        """The stream a loader's ``worker`` continues and its first item.

        The loader asks its workers in turn from worker 0; after ``batches``
        batches the next one is due from stream ``batches % workers``, which
        has given the batches ``stream, stream + workers, ...`` so far."""
        batches, batch_size = self.start
        stream = (worker + batches) % workers
        return stream, max(0, -(-(batches - stream) // workers)) * batch_size

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        worker, first = self._stream(*((0, 1) if info is None else (info.id, info.num_workers)))
        keys = {
            name: gp.ArrayKey(f"HOT_DISTANCE_DATASET_{name.upper()}")
            for name in ("raw", "gt", "mask", "target", "distance_mask", "shift", "sample")
        }
        distance_mask = keys["distance_mask"] if self.predictor.mask_distances else None
        pipeline = hot_distance_pipeline(
            self.samples,
            self.predictor,
            keys["raw"],
            keys["gt"],
            keys["mask"],
            keys["target"],
            distance_mask,
            augment=self.augment,
            weights=self.weights,
            random_shift=keys["shift"],
            sample_index=keys["sample"],
        )
        output = Roi((0,) * self.voxel_size.dims, self.output_shape * self.voxel_size)
        specs = {
            keys["raw"]: Roi(-self.context * self.voxel_size, self.input_shape * self.voxel_size)
        }
        for name in ("gt", "mask", "target"):
            specs[keys[name]] = output
        if distance_mask is not None:
            specs[distance_mask] = output
        with gp.build(pipeline):
            for n in itertools.count(first):
                state = np.random.SeedSequence([self.seed, self.rank, worker, n])
                request = gp.BatchRequest(random_seed=int(state.generate_state(1)[0]))
                for key, roi in specs.items():
                    request[key] = gp.ArraySpec(roi=roi)
                for name in ("shift", "sample"):
                    request[keys[name]] = gp.ArraySpec(nonspatial=True)
                batch = pipeline.request_batch(request)
                yield self._item(batch, keys, distance_mask)

    def _item(
        self, batch: gp.Batch, keys: dict[str, gp.ArrayKey], distance_mask: gp.ArrayKey | None
    ) -> dict[str, torch.Tensor]:
        def tensor(key: gp.ArrayKey, dtype: type) -> torch.Tensor:
            return torch.from_numpy(np.array(batch[key].data, dtype=dtype, copy=True))

        mask = tensor(keys["mask"], np.uint8)
        return {
            "raw": tensor(keys["raw"], np.float32)[None],
            "gt": tensor(keys["gt"], np.uint8),
            "target": tensor(keys["target"], np.float32),
            "mask": mask,
            "distance_mask": (
                tensor(distance_mask, np.uint8)
                if distance_mask is not None
                else torch.ones_like(mask)
            ),
            "sample": tensor(keys["sample"], np.int64),
            "offset": tensor(keys["shift"], np.int64),
        }
