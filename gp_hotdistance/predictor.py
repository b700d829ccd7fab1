"""The predictor interface and the hot-distance predictor."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from funlib.geometry import Coordinate

from gp_hotdistance import kernels
from gp_hotdistance.kernels import MovingCounts
from gp_hotdistance.kernels.validation import check_channels, check_finite

if TYPE_CHECKING:
    # imported where used: dask and funlib.persistence take seconds to import,
    # and blockwise workers compute targets from numpy arrays alone
    from funlib.persistence import Array


def target_channel_names(channels: Sequence[str]) -> tuple[str, ...]:
    """Names of the ``[hot x C, distance x C]`` channels of a target,
    weights or prediction: ``hot_<c>`` for every class, then ``dist_<c>``."""
    return tuple(f"hot_{c}" for c in channels) + tuple(f"dist_{c}" for c in channels)


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
        channels: One unique, non-empty name per class; ``C = len(channels)``.
        scale_factor: World distance scale of the tanh (finite, > 0; Python
            or numpy number); also ``max_distance``, the context a target
            needs when ``mask_distances`` is set.
        mask_distances: Mask out distances that the crop cannot know
            (``True``/``False``, numpy bools included).
        kernel_size: Kernel size of the model head (a positive integer).
        epsilon, threshold: Distance-mask parameters (see
            :func:`gp_hotdistance.kernels.distance_mask`): finite,
            ``epsilon >= 0`` and ``0 < threshold <= 1`` (``threshold`` caps a
            tanh value, so 0 would switch the distance mask off).
        clipmin, clipmax: Clip range of the class fractions when balancing,
            ``0 < clipmin <= clipmax <= 1`` (weights are ``1 / (2 * frac)``).
        class_ids: For class-id ground truth ``(*spatial)``: the integer id
            of each channel's class (default ``1..C``), unique, within the
            uint64 range; other ids are background.
        norm: Distance normalisation; only ``"tanh"`` exists.

    Raises:
        TypeError: a parameter has the wrong type (a string or bool for a
            number, a float class id, a non-bool ``mask_distances``).
        ValueError: a parameter is outside its range: empty, blank or
            duplicate channels, a non-positive or non-finite scale factor,
            a non-tanh norm, a kernel size below 1, ``epsilon``,
            ``threshold`` or the clip range as above, ``class_ids`` of the
            wrong length, duplicated or outside ``[0, 2**64)``.
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
        channels = check_channels(channels)
        scale = check_finite("scale_factor", scale_factor)
        if not scale > 0:
            raise ValueError(f"scale_factor must be positive and finite, got {scale_factor!r}")
        if not isinstance(mask_distances, (bool, np.bool_)):
            raise TypeError(f"mask_distances must be True or False, got {mask_distances!r}")
        if not isinstance(norm, str) or norm != "tanh":
            raise ValueError(f"norm must be 'tanh' (the only normalisation), got {norm!r}")
        if not kernels.is_integer(kernel_size) or kernel_size < 1:
            raise ValueError(f"kernel_size must be a positive integer, got {kernel_size!r}")
        if not check_finite("epsilon", epsilon) >= 0:
            raise ValueError(f"epsilon must be >= 0, got epsilon={epsilon!r}")
        if not 0 < check_finite("threshold", threshold) <= 1:
            raise ValueError(f"threshold must satisfy 0 < threshold <= 1, got {threshold!r}")
        low, high = check_finite("clipmin", clipmin), check_finite("clipmax", clipmax)
        if not 0 < low <= high <= 1:
            raise ValueError(
                f"clipmin/clipmax must satisfy 0 < clipmin <= clipmax <= 1, "
                f"got clipmin={clipmin!r}, clipmax={clipmax!r}"
            )
        class_ids = (
            tuple(range(1, len(channels) + 1))
            if class_ids is None
            else kernels.check_class_ids(class_ids, len(channels))
        )
        self.channels = channels
        self.scale_factor = scale
        self.mask_distances = bool(mask_distances)
        self.kernel_size = int(kernel_size)
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
        return OutputArrayType(target_channel_names(self.channels))

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

        Raises:
            ValueError: the voxel size is missing although the ROI grows, or
                is not positive on every axis.
        """
        gt_spec = target_spec.copy()
        if gt_spec.voxel_size is not None:
            grid_voxel_size(gt_spec.voxel_size, "target_spec.voxel_size")
        if self.mask_distances:
            if gt_spec.voxel_size is None:
                raise ValueError(
                    f"gt_region_for_roi needs target_spec.voxel_size, got None in {target_spec}"
                )
            context = self.context(gt_spec.voxel_size)
            gt_spec.roi = gt_spec.roi.grow(context, context).snap_to_grid(
                gt_spec.voxel_size, mode="shrink"
            )
        return gt_spec

    def context(self, voxel_size: Coordinate) -> Coordinate:
        """World context on each side that :meth:`gt_region_for_roi` adds
        (``max_distance`` per axis when ``mask_distances``, else 0)."""
        if self.mask_distances:
            return self.padding(voxel_size)
        return Coordinate((0,) * voxel_size.dims)

    def snapped_context(self, voxel_size: Coordinate) -> tuple[Coordinate, Coordinate]:
        """World context ``(negative, positive)`` that :meth:`gt_region_for_roi`
        adds around any ROI on the grid of ``voxel_size``.

        Growing an on-grid ROI by :meth:`context` ``c`` and snapping inwards
        (``mode="shrink"``) keeps whole voxels only, so each side grows by
        ``(c // v) * v`` per axis of voxel size ``v``: the same on both sides.
        """
        voxel_size = Coordinate(voxel_size)
        context = self.context(voxel_size)
        snapped = Coordinate((c // v) * v for c, v in zip(context, voxel_size, strict=True))
        return snapped, snapped

    def whole_voxel_context(
        self, voxel_size: Coordinate, context: Sequence[float] | None = None
    ) -> Coordinate:
        """``context`` (world units per axis; default :meth:`padding`,
        ``max_distance`` per axis) rounded UP to whole voxels of
        ``voxel_size``: the context a blockwise target needs to be exact where
        ``|d| <= max_distance`` (docs/blockwise.md). :meth:`snapped_context`
        rounds down instead: ``gt_region_for_roi`` keeps the whole voxels
        inside ``max_distance``."""
        voxel_size = Coordinate(voxel_size)
        if context is None:
            context = self.padding(voxel_size)
        return Coordinate(math.ceil(c / v) * v for c, v in zip(context, voxel_size, strict=True))

    def padding(self, gt_voxel_size: Coordinate) -> Coordinate:
        """``Coordinate((max_distance,) * dims)``: what a training pipeline
        pads the ground truth by.

        Raises:
            ValueError: ``gt_voxel_size`` is not a positive integer on every axis.
        """
        dims = grid_voxel_size(gt_voxel_size, "gt_voxel_size").dims
        return Coordinate((self.max_distance,) * dims)

    # -- arrays ------------------------------------------------------------------

    def gt_channels(self, data: npt.NDArray, spatial_dims: int, name: str = "gt") -> npt.NDArray:
        """``data`` as binary channels ``(C, *spatial)``: a class-id volume
        ``(*spatial)`` is converted with ``class_ids``; channel data is checked.

        Raises:
            ValueError: wrong number of dimensions or channels, no voxels,
                non-binary values.
            TypeError: unsupported dtype.
        """
        data = np.asarray(data)
        kernels.check_dims(spatial_dims, name)
        kernels.check_not_empty(data, name)
        if data.ndim == spatial_dims:
            return kernels.to_channels(data, self.class_ids)
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
        kernels.check_binary(data, name)
        return data

    def process(self, labels: npt.NDArray, voxel_size: Sequence[float]) -> npt.NDArray[np.float32]:
        """Target ``[hot x C, tanh(d / scale_factor) x C]`` (float32) of
        binary channels ``labels`` with ``voxel_size`` in world units.

        Raises:
            ValueError: a voxel size that is not positive and finite, or the
                errors of :meth:`gt_channels`.
        """
        voxel_size = kernels.check_voxel_size(voxel_size)
        labels = self.gt_channels(labels, len(voxel_size), name="labels")
        return kernels.hot_distance_target(labels, voxel_size, self.scale_factor)

    def create_target(self, gt: Array) -> Array:
        """The target Array (``2C`` channels, axis ``c^`` first) at ``gt``'s
        offset and voxel size."""
        data = self.process(_read(gt, gt, "gt"), gt.voxel_size)
        return _channel_array(data, gt)

    def create_distance_mask(
        self, distances: npt.NDArray, mask: npt.NDArray | None, voxel_size: Sequence[float]
    ) -> npt.NDArray:
        """``C`` channels in the mask's dtype: ``mask`` set to 0 wherever
        ``min(|t| + epsilon, threshold) >= tanh(b / scale_factor)``, with ``t``
        the tanh distances and ``b`` the world distance to the nearest unknown
        voxel of the mask (the crop edge counts as unknown).

        Raises:
            ValueError: wrong dims or channels, no voxels, a voxel size that
                is not positive and finite, a mask that is not broadcastable
                or holds values outside ``[0, 1]`` (see
                :func:`gp_hotdistance.kernels.check_mask`).
        """
        distances = np.asarray(distances)
        kernels.check_dims(distances.ndim - 1, "distances")
        kernels.check_not_empty(distances, "distances")
        voxel_size = kernels.check_voxel_size(voxel_size, distances.ndim - 1)
        if distances.shape[0] != self.classes:
            raise ValueError(
                f"distances has {distances.shape[0]} channels, expected {self.classes}"
            )
        if mask is None:
            mask = np.ones(distances.shape[1:], dtype=np.uint8)
        return kernels.distance_mask(
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
        in are not modified. ``gt`` and ``mask`` are read at ``target.roi``.

        Raises:
            ValueError: ``gt`` or ``mask`` does not cover ``target.roi`` on
                ``target``'s voxel grid, malformed ``moving_class_counts``
                (see :func:`gp_hotdistance.kernels.check_moving_counts`),
                or a mask value outside ``[0, 1]``.
        """
        roi = target.roi
        if moving_class_counts is not None:
            moving_class_counts = kernels.check_moving_counts(
                moving_class_counts, self.embedding_dims, "moving_class_counts"
            )
        gt_data = self.gt_channels(_read(gt, target, "gt"), len(roi.shape))
        mask_data = None if mask is None else _read(mask, target, "mask")
        distance_mask = None
        if self.mask_distances:
            target_data = _read(target, target, "target")
            distance_mask = self.create_distance_mask(
                target_data[self.classes :], mask_data, target.voxel_size
            )
        weights, counts = kernels.hot_distance_weights(
            gt_data, mask_data, distance_mask, moving_class_counts, self.clipmin, self.clipmax
        )
        return _channel_array(weights, target), counts


def grid_voxel_size(voxel_size: Any, name: str = "voxel_size") -> Coordinate:
    """``voxel_size`` as a :class:`Coordinate`, checked to be a positive
    integer on every axis (``Coordinate`` would truncate ``4.5`` to 4).

    Raises:
        TypeError: an entry is not a number.
        ValueError: an entry is not a positive integer.
    """
    values = kernels.check_voxel_size(voxel_size, name=name)
    if not all(float(v).is_integer() for v in values):
        raise ValueError(f"{name} must be integers on the voxel grid, got {values!r}")
    return Coordinate(int(v) for v in values)


def _read(array: Array, like: Array, name: str) -> npt.NDArray:
    """The data of ``array`` (called ``name`` in errors) inside ``like.roi``,
    on ``like``'s voxel grid, as a numpy array: a view of an unchanged
    :class:`~gp_hotdistance.arrays.InMemoryArray`, else read through funlib.

    Raises:
        ValueError: another voxel size, or an ROI that does not cover
            ``like.roi`` or is off its grid.
    """
    roi, voxel_size = like.roi, like.voxel_size
    if array.voxel_size != voxel_size:
        raise ValueError(
            f"{name} has voxel size {array.voxel_size}, but the target has {voxel_size}"
        )
    if (array.roi.offset - roi.offset) % voxel_size != Coordinate((0,) * voxel_size.dims):
        raise ValueError(
            f"{name} ROI {array.roi} is not on the voxel grid of the target ROI {roi} "
            f"(voxel size {voxel_size})"
        )
    if not array.roi.contains(roi):
        raise ValueError(
            f"{name} ROI {array.roi} does not cover the target ROI {roi} it is needed at"
        )
    source = _numpy_source(array)
    if source is not None:
        spatial = (roi - array.offset) / array.voxel_size
        channels = (slice(None),) * (source.ndim - roi.dims)
        return source[channels + spatial.to_slices()]
    if roi == array.roi:
        return np.asarray(array.data)
    return np.asarray(array[roi])


def _numpy_source(array: Array) -> npt.NDArray | None:
    """The numpy array that ``array``'s data is, unchanged (no lazy ops), or
    ``None``: an :class:`~gp_hotdistance.arrays.InMemoryArray`'s array, or the
    numpy array a funlib ``Array`` was made from (its ``_source_data``), which
    is then read without a dask compute."""
    from gp_hotdistance.arrays import InMemoryArray

    if array.lazy_ops:
        return None
    if isinstance(array, InMemoryArray):
        return array.ndarray if array.data is array.dask_data else None
    source = getattr(array, "_source_data", None)
    if (
        isinstance(source, np.ndarray)
        and source.shape == array.data.shape
        and source.dtype == array.data.dtype
    ):
        return source
    return None


def _channel_array(data: npt.NDArray, like: Array) -> Array:
    """``data`` (channels first) as an
    :class:`~gp_hotdistance.arrays.InMemoryArray` at ``like``'s offset and
    voxel size, channel axis ``c^``."""
    from gp_hotdistance.arrays import InMemoryArray

    spatial = like.axis_names[-like.voxel_size.dims :]
    return InMemoryArray(
        data,
        offset=like.offset,
        voxel_size=like.voxel_size,
        axis_names=["c^", *spatial],
        units=like.units,
    )
