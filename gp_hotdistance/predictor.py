"""The predictor interface and the hot-distance predictor."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import numpy.typing as npt
from funlib.geometry import Coordinate, Roi
from funlib.persistence import Array

from gp_hotdistance import functional as F
from gp_hotdistance.functional import MovingCounts


@dataclass(frozen=True)
class OutputArrayType:
    """What a predictor's model outputs: ``channels`` named channels, all
    interpolatable (probabilities and distances)."""

    channels: tuple[str, ...]
    interpolatable: bool = True


class Predictor(ABC):
    """How to train a model to predict a target from ground truth.

    A predictor creates the model head, the training target and the
    per-voxel weights, and says how much ground-truth context a target needs.
    """

    @abstractmethod
    def create_model(self, architecture: Any) -> Any:
        """Append this predictor's head to ``architecture``."""

    @abstractmethod
    def create_target(self, gt: Array) -> Array:
        """The training target for the ground truth ``gt``."""

    @abstractmethod
    def create_weight(
        self, gt: Array, target: Array, mask: Array | None, moving_class_counts: Any = None
    ) -> tuple[Array, Any]:
        """Per-voxel loss weights and the updated moving class counts."""

    @property
    @abstractmethod
    def output_array_type(self) -> OutputArrayType:
        """The kind of array the model predicts."""

    def gt_region_for_roi(self, target_spec: Any) -> Any:
        """The ground-truth spec needed for a target at ``target_spec``
        (the same ROI by default)."""
        return target_spec.copy()

    def padding(self, gt_voxel_size: Coordinate) -> Coordinate:
        """How far the ground truth must be padded (none by default)."""
        return Coordinate((0,) * gt_voxel_size.dims)


class HotDistancePredictor(Predictor):
    """One-hot channels plus tanh-normalised signed boundary distances.

    Target channels: ``[hot x C, tanh(d / scale_factor) x C]`` with ``d`` the
    signed world distance (positive inside) from each voxel centre to the
    nearest face between differently labelled voxels. Weights: ``2C``
    channels, each balanced between its two classes with moving counts.

    Args:
        channels: One name per class; ``C = len(channels)``.
        scale_factor: World distance scale of the tanh; also ``max_distance``,
            the context a target needs when ``mask_distances`` is set.
        mask_distances: Mask out distances that the crop cannot know.
        kernel_size: Kernel size of the model head.
        epsilon, threshold: Distance-mask parameters (see
            :func:`gp_hotdistance.functional.distance_mask`).
        clipmin, clipmax: Clip range of the class fractions when balancing.
        class_ids: For class-id ground truth ``(*spatial)``: the id of each
            channel's class (default ``1..C``); other ids are background.
        norm: Distance normalisation; only ``"tanh"`` exists.

    Raises:
        ValueError: empty or duplicate channels, a non-positive or non-finite
            scale factor, a non-tanh norm, a bad kernel size, clip range or
            ``class_ids`` of the wrong length.
    """

    def __init__(
        self,
        channels: Sequence[str],
        scale_factor: float,
        mask_distances: bool,
        kernel_size: int = 1,
        epsilon: float = 0.05,
        threshold: float = 0.8,
        clipmin: float = 0.05,
        clipmax: float = 0.95,
        class_ids: Sequence[int] | None = None,
        norm: str = "tanh",
    ):
        if isinstance(channels, str) or len(channels) == 0:
            raise ValueError(f"channels must be a non-empty list of names, got {channels!r}")
        if len(set(channels)) != len(channels):
            raise ValueError(f"channels must be unique, got {list(channels)}")
        if isinstance(scale_factor, bool) or not isinstance(scale_factor, (int, float)):
            raise TypeError(f"scale_factor must be a number, got {scale_factor!r}")
        if not (math.isfinite(scale_factor) and scale_factor > 0):
            raise ValueError(f"scale_factor must be positive and finite, got {scale_factor!r}")
        if norm != "tanh":
            raise ValueError(f"norm must be 'tanh' (the only normalisation), got {norm!r}")
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1:
            raise ValueError(f"kernel_size must be a positive integer, got {kernel_size!r}")
        if not 0 <= clipmin <= clipmax <= 1 or clipmin == 0:
            raise ValueError(
                f"clipmin/clipmax must satisfy 0 < clipmin <= clipmax <= 1, "
                f"got clipmin={clipmin!r}, clipmax={clipmax!r}"
            )
        if class_ids is None:
            class_ids = range(1, len(channels) + 1)
        class_ids = tuple(int(i) for i in class_ids)
        if len(class_ids) != len(channels) or len(set(class_ids)) != len(class_ids):
            raise ValueError(
                f"class_ids must hold one unique id per channel ({len(channels)}), "
                f"got {list(class_ids)}"
            )
        self.channels = list(channels)
        self.scale_factor = float(scale_factor)
        self.mask_distances = bool(mask_distances)
        self.kernel_size = kernel_size
        self.epsilon = float(epsilon)
        self.threshold = float(threshold)
        self.clipmin = float(clipmin)
        self.clipmax = float(clipmax)
        self.class_ids = class_ids
        self.norm = norm
        self.max_distance = 1 * self.scale_factor

    def __repr__(self) -> str:
        return (
            f"HotDistancePredictor(channels={self.channels}, scale_factor={self.scale_factor}, "
            f"mask_distances={self.mask_distances}, kernel_size={self.kernel_size})"
        )

    # -- sizes -------------------------------------------------------------

    @property
    def classes(self) -> int:
        """Number of classes ``C``."""
        return len(self.channels)

    @property
    def embedding_dims(self) -> int:
        """Number of target / model output channels, ``2C``."""
        return 2 * self.classes

    @property
    def output_array_type(self) -> OutputArrayType:
        """``2C`` interpolatable channels: ``hot_<name>`` then ``dist_<name>``."""
        return OutputArrayType(
            tuple(f"hot_{c}" for c in self.channels) + tuple(f"dist_{c}" for c in self.channels)
        )

    # -- model ---------------------------------------------------------------

    def create_model(self, architecture: Any) -> Any:
        """Append a ``ConvNd(architecture.num_out_channels, 2C, kernel_size)``
        head (no activation) to ``architecture``, which exposes ``dims`` and
        ``num_out_channels``."""
        from gp_hotdistance.torch.model import append_head

        return append_head(architecture, self.embedding_dims, self.kernel_size)

    # -- context ---------------------------------------------------------------

    def gt_region_for_roi(self, target_spec: Any) -> Any:
        """A copy of ``target_spec`` whose ROI is grown by ``max_distance`` on
        every side and snapped inwards to the voxel grid when
        ``mask_distances`` is set; an unchanged copy otherwise.

        ``target_spec`` needs a ``voxel_size`` when the ROI grows.
        """
        gt_spec = target_spec.copy()
        if self.mask_distances:
            if gt_spec.voxel_size is None:
                raise ValueError(
                    f"gt_region_for_roi needs target_spec.voxel_size, got None in {target_spec}"
                )
            gt_spec.roi = grow_roi(
                gt_spec.roi, self.context(gt_spec.voxel_size), gt_spec.voxel_size
            )
        return gt_spec

    def context(self, voxel_size: Coordinate) -> Coordinate:
        """World context on each side that :meth:`gt_region_for_roi` adds
        (``max_distance`` per axis when ``mask_distances``, else 0)."""
        if self.mask_distances:
            return self.padding(voxel_size)
        return Coordinate((0,) * voxel_size.dims)

    def padding(self, gt_voxel_size: Coordinate) -> Coordinate:
        """``Coordinate((max_distance,) * dims)``: what a training pipeline
        pads the ground truth by."""
        return Coordinate((self.max_distance,) * Coordinate(gt_voxel_size).dims)

    # -- arrays ------------------------------------------------------------------

    def gt_channels(self, data: npt.NDArray, spatial_dims: int, name: str = "gt") -> npt.NDArray:
        """``data`` as binary channels ``(C, *spatial)``: a class-id volume
        ``(*spatial)`` is converted with ``class_ids``; channel data is checked.

        Raises:
            ValueError: wrong number of dimensions or channels, non-binary values.
            TypeError: unsupported dtype.
        """
        data = np.asarray(data)
        F.check_dims(spatial_dims, name)
        if data.ndim == spatial_dims:
            return F.to_channels(data, self.class_ids)
        if data.ndim != spatial_dims + 1:
            raise ValueError(
                f"{name} must be (C, *spatial) or (*spatial) with {spatial_dims} spatial "
                f"dims, got shape {data.shape}"
            )
        if data.shape[0] != self.classes:
            raise ValueError(
                f"{name} has {data.shape[0]} channels, but channels={self.channels} "
                f"names {self.classes}"
            )
        F.check_binary(data, name)
        return data

    def process(self, labels: npt.NDArray, voxel_size: Sequence[float]) -> npt.NDArray[np.float32]:
        """Target ``[hot x C, tanh(d / scale_factor) x C]`` (float32) of
        binary channels ``labels`` with ``voxel_size`` in world units."""
        voxel_size = tuple(voxel_size)
        labels = self.gt_channels(labels, len(voxel_size), name="labels")
        return F.hot_distance_target(labels, voxel_size, self.scale_factor)

    def create_target(self, gt: Array) -> Array:
        """The target Array (``2C`` channels, axis ``c^`` first) at ``gt``'s
        offset and voxel size."""
        data = self.process(np.asarray(gt.data), gt.voxel_size)
        return _channel_array(data, gt)

    def create_distance_mask(
        self, distances: npt.NDArray, mask: npt.NDArray | None, voxel_size: Sequence[float]
    ) -> npt.NDArray:
        """``C`` channels in the mask's dtype: ``mask`` set to 0 wherever
        ``min(|t| + epsilon, threshold) >= tanh(b / scale_factor)``, with ``t``
        the tanh distances and ``b`` the world distance to the nearest unknown
        voxel of the mask (the crop edge counts as unknown)."""
        distances = np.asarray(distances)
        voxel_size = tuple(voxel_size)
        F.check_dims(distances.ndim - 1, "distances")
        if distances.shape[0] != self.classes:
            raise ValueError(
                f"distances has {distances.shape[0]} channels, expected {self.classes}"
            )
        if mask is None:
            mask = np.ones(distances.shape[1:], dtype=np.uint8)
        return F.distance_mask(
            distances,
            np.asarray(mask),
            voxel_size,
            self.scale_factor,
            self.epsilon,
            self.threshold,
        )

    def create_weight(
        self,
        gt: Array,
        target: Array,
        mask: Array | None,
        moving_class_counts: MovingCounts | None = None,
    ) -> tuple[Array, MovingCounts]:
        """Balanced weights ``[hot x C, distance x C]`` over ``target.roi``
        and the new moving counts (``2C`` dicts, hot first); the counts passed
        in are not modified."""
        roi = target.roi
        gt_data = self.gt_channels(_read(gt, roi), len(roi.shape))
        mask_data = None if mask is None else _read(mask, roi)
        distance_mask = None
        if self.mask_distances:
            target_data = _read(target, roi)
            distance_mask = self.create_distance_mask(
                target_data[self.classes :], mask_data, target.voxel_size
            )
        weights, counts = F.hot_distance_weights(
            gt_data, mask_data, distance_mask, moving_class_counts, self.clipmin, self.clipmax
        )
        return _channel_array(weights, target), counts


def grow_roi(roi: Roi, context: Coordinate, voxel_size: Coordinate) -> Roi:
    """``roi`` grown by ``context`` on every side, snapped inwards to the grid."""
    return roi.grow(context, context).snap_to_grid(voxel_size, mode="shrink")


class InMemoryArray(Array):
    """A funlib.persistence ``Array`` over an in-memory numpy array that
    keeps a reference to it, so that the predictor reads it back as a view.

    Plain ``Array(ndarray)`` hashes every byte to name its dask array, and
    reading a dask-backed ``Array`` (``np.asarray``, ``array[roi]``) computes
    a full copy; both cost as much as the kernels. The dask array here is one
    chunk under a random name. Used for the predictor's outputs; anything
    else (zarr, dask, lazy ops) is read through funlib as usual.
    """

    def __init__(self, data: npt.NDArray, **metadata: Any):
        self.ndarray = data
        super().__init__(da.from_array(data, chunks=data.shape, name=False), **metadata)
        self.thaw()
        self.dask_data = self.data
        self.freeze()


def _read(array: Array, roi: Roi) -> npt.NDArray:
    """The data of ``array`` inside ``roi`` as a numpy array: a view of an
    unchanged :class:`InMemoryArray`, else read through funlib."""
    if isinstance(array, InMemoryArray) and not array.lazy_ops and array.data is array.dask_data:
        spatial = (roi - array.offset) / array.voxel_size
        channels = (slice(None),) * (array.ndarray.ndim - roi.dims)
        return array.ndarray[channels + spatial.to_slices()]
    if roi == array.roi:
        return np.asarray(array.data)
    return np.asarray(array[roi])


def _channel_array(data: npt.NDArray, like: Array) -> Array:
    """``data`` (channels first) as an :class:`InMemoryArray` at ``like``'s
    offset and voxel size, channel axis ``c^``."""
    spatial = like.axis_names[-like.voxel_size.dims :]
    return InMemoryArray(
        data,
        offset=like.offset,
        voxel_size=like.voxel_size,
        axis_names=["c^", *spatial],
        units=like.units,
    )
