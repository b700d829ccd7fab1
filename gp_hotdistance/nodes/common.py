"""Spec, ROI and error helpers shared by the hot-distance nodes.

Geometry of one node asked for an output at ROI ``R``::

      upstream input ROI U (e.g. GT, padded by predictor.padding)
    +-----------------------------------------------+
    |    advertised ROI A = U shrunk by the context |
    |  +-----------------------------------------+  |
    |  |   G = gt_region_for_roi(R)              |  |
    |  |  +---------------------+                |  |
    |  |  |  +-------+          |                |  |
    |  |  |  |   R   | context  |                |  |
    |  |  |  +-------+          |                |  |
    |  |  +---------------------+                |  |
    |  +-----------------------------------------+  |
    +-----------------------------------------------+

The node requests its input at ``G`` (``R`` grown by the context, snapped to
the voxel grid), computes there and crops the result back to ``R`` in voxel
units. ``A`` holds exactly the on-grid ROIs ``R`` whose ``G`` fits in ``U``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import gunpowder as gp
from funlib.geometry import Coordinate, Roi


class ContextFilter(gp.BatchFilter):
    """A :class:`gunpowder.BatchFilter` whose outputs need input context.

    Subclasses announce outputs with :meth:`advertise` in ``setup``; a
    request outside the advertised ROI then fails with an error that names
    the node, the key, the ROI and the upstream ROIs, instead of gunpowder's
    bare assertion.
    """

    _inputs: dict[Any, dict[Any, Roi | None]]

    def advertise(self, key: Any, spec: gp.ArraySpec, inputs: dict[Any, Roi | None]) -> None:
        """``provides(key, spec)`` and ``enable_autoskip()``, remembering the
        upstream ROIs ``inputs`` that limit ``spec.roi`` for error messages.

        Raises:
            ValueError: ``spec.roi`` is empty: the inputs have no room for
                the context.
        """
        if spec.roi is not None and spec.roi.empty:
            upstream = ", ".join(f"{k} at {r}" for k, r in inputs.items())
            raise ValueError(
                f"{self.name()}: cannot provide {key}: upstream provides {upstream}, "
                f"which leaves no room for the predictor's context"
            )
        if not hasattr(self, "_inputs"):
            self._inputs = {}
        self._inputs[key] = dict(inputs)
        self.provides(key, spec)
        self.enable_autoskip()

    def check_request_consistency(self, request: gp.BatchRequest) -> None:
        for key, request_spec in request.array_specs.items():
            if key not in self.spec:
                continue
            roi = request_spec.roi
            spec = self.spec[key]
            if key in self.provided_items:
                check_aligned(self, key, roi, spec.voxel_size)
            if spec.roi is None or roi is None or spec.roi.contains(roi):
                continue
            if key in self.provided_items:
                upstream = ", ".join(f"{k} at {r}" for k, r in self._inputs[key].items())
                raise ValueError(
                    f"{self.name()}: {key} requested at ROI {roi}, which has no room for its "
                    f"context: this node can deliver {key} only within {spec.roi}, because "
                    f"upstream provides {upstream}. Request a ROI inside {spec.roi}, or pad "
                    f"the inputs by predictor.padding(voxel_size)."
                )
            raise ValueError(
                f"{self.name()}: {key} requested at ROI {roi}, but it is available here only "
                f"within {spec.roi} (upstream nodes may shrink it by their context)"
            )
        super().check_request_consistency(request)


def upstream_spec(node: gp.BatchFilter, key: Any, role: str) -> gp.ArraySpec:
    """The upstream spec of ``key`` (the node's ``role`` input), checked to be
    a spatial array with a voxel size.

    Raises:
        ValueError: ``key`` is not provided upstream, or has no ROI or no
            positive voxel size.
    """
    if key not in node.spec:
        offered = sorted(str(k) for k in node.spec.array_specs)
        raise ValueError(
            f"{node.name()}: upstream does not provide {role} {key}; it provides {offered}"
        )
    spec = node.spec[key]
    if spec.voxel_size is None or spec.roi is None:
        raise ValueError(
            f"{node.name()}: {role} {key} must be a spatial array with a ROI and a voxel "
            f"size, got roi={spec.roi}, voxel_size={spec.voxel_size}"
        )
    if not all(v is not None and v > 0 for v in spec.voxel_size):
        raise ValueError(
            f"{node.name()}: {role} {key} has voxel size {spec.voxel_size}; "
            "it must be positive on every axis"
        )
    return spec


def check_same_voxel_size(
    node: gp.BatchFilter, specs: Mapping[Any, gp.ArraySpec | None]
) -> Coordinate:
    """The common voxel size of ``specs`` (``None`` entries skipped).

    Raises:
        ValueError: two arrays have different voxel sizes.
    """
    present = {key: spec for key, spec in specs.items() if spec is not None}
    sizes = {key: spec.voxel_size for key, spec in present.items()}
    first_key, first = next(iter(sizes.items()))
    for key, size in sizes.items():
        if size != first:
            raise ValueError(
                f"{node.name()}: voxel size of {key} is {size}, but {first_key} has "
                f"{first}; all inputs must share one voxel size"
            )
    return first


def shrink(roi: Roi, negative: Coordinate, positive: Coordinate, voxel_size: Coordinate) -> Roi:
    """The on-grid ROIs ``R`` whose ``R.grow(negative, positive)`` fits in
    ``roi``: ``roi`` shrunk by the context, snapped inwards to the grid."""
    return roi.grow(-negative, -positive).snap_to_grid(voxel_size, mode="shrink")


def check_aligned(node: gp.BatchFilter, key: Any, roi: Roi | None, voxel_size: Coordinate) -> None:
    """Raise ``ValueError`` unless ``roi`` lies on the voxel grid."""
    if roi is None or voxel_size is None or roi.unbounded:
        return
    if any(b % v for b, v in zip(roi.begin, voxel_size, strict=True)) or any(
        s % v for s, v in zip(roi.shape, voxel_size, strict=True)
    ):
        raise ValueError(
            f"{node.name()}: {key} requested at ROI {roi}, which is not aligned to the "
            f"voxel grid of voxel size {voxel_size}"
        )


def grown_request(
    node: gp.BatchFilter,
    key: Any,
    request_spec: gp.ArraySpec,
    voxel_size: Coordinate,
    context: tuple[Coordinate, Coordinate],
    input_key: Any,
    input_roi: Roi,
) -> gp.ArraySpec:
    """A new spec for ``input_key``: a copy of ``request_spec`` (the request
    for the node's output ``key``, on the voxel grid) grown by ``context``
    ``(negative, positive)``, the predictor's snapped context that the node
    computed in ``setup`` (for an on-grid ROI the same region as
    ``predictor.gt_region_for_roi``); dtype cleared; ``request_spec`` itself
    is left untouched.

    Raises:
        ValueError: the grown ROI does not fit in ``input_roi``, the upstream
            ROI of ``input_key``.
    """
    spec = request_spec.copy()
    spec.voxel_size = voxel_size
    spec.dtype = None
    spec.interpolatable = None
    grown = spec
    grown.roi = request_spec.roi.grow(*context)
    if input_roi is not None and not input_roi.contains(grown.roi):
        raise ValueError(
            f"{node.name()}: {key} at ROI {request_spec.roi} needs {input_key} at "
            f"{grown.roi} (grown by the predictor's context), but upstream provides "
            f"{input_key} only at {input_roi}"
        )
    return grown


@contextmanager
def errors_about(node: gp.BatchFilter, key: Any) -> Iterator[None]:
    """Re-raise ``ValueError``/``TypeError`` from the kernels with the node
    and key named in front of the message."""
    try:
        yield
    except (ValueError, TypeError) as e:
        raise type(e)(f"{node.name()}: {key}: {e}") from e
