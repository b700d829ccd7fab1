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


def relative_slices(inner: Roi, outer: Roi, voxel_size: Sequence[int]) -> tuple[slice, ...]:
    """:func:`roi_slices` on the grid that starts at ``outer``'s offset: an
    array whose offset is not a multiple of its voxel size (a funlib array
    may have any integer offset) puts every ROI read from it on that shifted
    grid, not on the absolute one."""
    return roi_slices(inner - outer.offset, outer - outer.offset, voxel_size)
