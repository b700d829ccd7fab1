"""ROI arithmetic shared by the nodes, the scripts and the tests."""

from __future__ import annotations

from collections.abc import Sequence

from funlib.geometry import Coordinate, Roi


def roi_slices(roi: Roi, outer: Roi, voxel_size: Sequence[int]) -> tuple[slice, ...]:
    """Spatial voxel slices selecting ``roi`` in an array that covers ``outer``.

    Both ROIs lie on the grid of ``voxel_size`` and ``outer`` contains ``roi``;
    prepend ``slice(None)`` for a channel axis.

    Raises:
        ValueError: ``outer`` does not contain ``roi``, or either is off the grid.
    """
    voxel_size = Coordinate(voxel_size)
    if not outer.contains(roi):
        raise ValueError(f"ROI {roi} is not inside the array's ROI {outer}")
    for name, r in (("ROI", roi), ("array ROI", outer)):
        if any(b % v for b, v in zip(r.begin, voxel_size, strict=True)) or any(
            s % v for s, v in zip(r.shape, voxel_size, strict=True)
        ):
            raise ValueError(f"{name} {r} is not on the grid of voxel size {voxel_size}")
    return ((roi - outer.offset) / voxel_size).to_slices()
