"""gunpowder nodes that serve :class:`~gp_hotdistance.data.sample.Sample` s.

A training source for several samples::

    (SampleSource(s, raw, gt, mask) + RandomLabelledLocation(s)  for s in samples)
        + gp.RandomProvider(probabilities=[s.labelled_volume * weight ...])

is what :func:`sample_sources` builds.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import gunpowder as gp
import numpy as np
from funlib.geometry import Coordinate, Roi

from .sample import Sample, normalize_raw, union_cells


class SampleSource(gp.BatchProvider):
    """Provide a :class:`Sample` at its training voxel size ``V``.

    - ``raw``: float32, interpolatable, over the sample's raw ROI, normalised
      by :func:`~gp_hotdistance.data.normalize_raw` (uint8 / 255). With
      ``pad``, over all of space: 0 beyond the raw volume (what blockwise
      prediction reads there).
    - ``gt``, ``mask``: ``(C, *spatial)`` uint8, not interpolatable, over the
      same ROI; outside a channel's labelled ROI gt is 0 and mask 0 (unknown).

    Args:
        sample: what to read.
        raw, gt: keys to provide.
        mask: key for the mask, or ``None``.
        pad: provide every key over all of space (see above).
    """

    def __init__(
        self,
        sample: Sample,
        raw: gp.ArrayKey,
        gt: gp.ArrayKey,
        mask: gp.ArrayKey | None = None,
        pad: bool = False,
    ):
        self.sample = sample
        self.raw = raw
        self.gt = gt
        self.mask = mask
        self.pad = pad

    def setup(self) -> None:
        dims = self.sample.voxel_size.dims
        roi = Roi((None,) * dims, (None,) * dims) if self.pad else self.sample.raw_roi
        voxel_size = self.sample.voxel_size
        self.provides(
            self.raw,
            gp.ArraySpec(roi=roi, voxel_size=voxel_size, dtype=np.float32, interpolatable=True),
        )
        for key in (self.gt, self.mask):
            if key is not None:
                self.provides(
                    key,
                    gp.ArraySpec(
                        roi=roi, voxel_size=voxel_size, dtype=np.uint8, interpolatable=False
                    ),
                )

    def provide(self, request: gp.BatchRequest) -> gp.Batch:
        batch = gp.Batch()
        if self.raw in request:
            roi = request[self.raw].roi
            data = self.sample.read_raw_padded(roi) if self.pad else self.sample.read_raw(roi)
            data = normalize_raw(data, self.sample.raw.dtype)
            batch[self.raw] = gp.Array(data, self._output_spec(self.raw, roi))
        labels = {}
        for index, key in enumerate((self.gt, self.mask)):
            if key is None or key not in request:
                continue
            roi = request[key].roi
            region = (tuple(roi.begin), tuple(roi.shape))
            if region not in labels:
                labels[region] = self.sample.read_labels(roi)
            batch[key] = gp.Array(labels[region][index], self._output_spec(key, roi))
        return batch

    def _output_spec(self, key: gp.ArrayKey, roi: Roi) -> gp.ArraySpec:
        spec = self.spec[key].copy()
        spec.roi = roi
        return spec


class RandomLabelledLocation(gp.BatchFilter):
    """Shift each request to a random place whose centre voxel is labelled.

    The centre voxel of a request is voxel ``n // 2`` (per axis) of the
    bounding box of its ROIs, ``n`` that box's size in voxels of ``V``. It is
    drawn uniformly among the voxels of the sample's labelled ROIs (their
    union) for which every requested ROI lies inside what upstream provides
    (raw context comes from the large raw volume; gt and mask there are
    unknown). The batch comes back at the request's ROIs, like
    ``gp.RandomLocation``; the world shift (upstream ROI = requested ROI +
    shift) goes into ``random_shift`` (a nonspatial int64 array) if given.
    Locations come from ``np.random.default_rng(request.random_seed)``.

    Args:
        sample: whose labelled ROIs to centre on.
        random_shift: optional key for the shift.
    """

    def __init__(self, sample: Sample, random_shift: gp.ArrayKey | None = None):
        self.sample = sample
        self.random_shift = random_shift

    def setup(self) -> None:
        self.upstream_spec = self.get_upstream_provider().spec
        for key, spec in self.spec.items():
            if spec.roi is not None:
                spec = spec.copy()
                dims = spec.roi.dims
                spec.roi = Roi((None,) * dims, (None,) * dims)
                self.updates(key, spec)
        if self.random_shift is not None:
            self.provides(self.random_shift, gp.ArraySpec(nonspatial=True))

    def provide(self, request: gp.BatchRequest) -> gp.Batch:
        shift = self.choose_shift(request)
        upstream_request = request.copy()
        if self.random_shift is not None and self.random_shift in upstream_request:
            del upstream_request[self.random_shift]
        for _, spec in upstream_request.items():
            if spec.roi is not None:
                spec.roi = spec.roi.shift(shift)
        batch = self.get_upstream_provider().request_batch(upstream_request)
        for key, spec in request.array_specs.items():
            if key in batch.arrays:
                batch.arrays[key].spec.roi = spec.roi
        for key, spec in request.graph_specs.items():
            batch.graphs[key].shift(-shift)
            batch.graphs[key].spec.roi = spec.roi
        if self.random_shift is not None and self.random_shift in request:
            batch[self.random_shift] = gp.Array(
                np.array(shift, dtype=np.int64), gp.ArraySpec(nonspatial=True)
            )
        return batch

    def choose_shift(self, request: gp.BatchRequest) -> Coordinate:
        """The world shift for ``request`` (see the class docs)."""
        voxel_size = self.sample.voxel_size
        rois = {k: s.roi for k, s in request.items() if s.roi is not None}
        if not rois:
            raise ValueError(f"{self.name()}: request {request} has no ROI to place")
        low = high = None
        for key, roi in rois.items():
            if roi != roi.snap_to_grid(voxel_size):
                raise ValueError(
                    f"{self.name()}: requested ROI {roi} of {key} is not on the training grid "
                    f"of voxel size {tuple(voxel_size)}"
                )
            provided = self.upstream_spec[key].roi
            if provided is None or provided.unbounded:
                continue
            key_low, key_high = provided.begin - roi.begin, provided.end - roi.end
            low = key_low if low is None else Coordinate(map(max, low, key_low))
            high = key_high if high is None else Coordinate(map(min, high, key_high))
        total = functools.reduce(Roi.union, rois.values())
        centre = total.begin + Coordinate(
            s // v // 2 * v for s, v in zip(total.shape, voxel_size, strict=True)
        )
        labelled = [r for r in self.sample.labelled_rois.values() if r is not None]
        if low is not None:
            if any(lo > hi for lo, hi in zip(low, high, strict=True)):
                labelled = []
            else:
                allowed = Roi(centre + low, high - low + voxel_size)
                labelled = [r.intersect(allowed) for r in labelled]
        cells = union_cells(labelled)
        if not cells:
            raise ValueError(
                f"{self.name()}: no labelled voxel of {self.sample} can be the centre of "
                f"request {request} with every ROI inside upstream's {self.upstream_spec}"
            )
        rng = np.random.default_rng(request.random_seed)
        sizes = np.array([np.prod(c.shape / voxel_size) for c in cells], dtype=np.float64)
        cell = cells[rng.choice(len(cells), p=sizes / sizes.sum())]
        voxel = Coordinate(int(rng.integers(0, n)) for n in cell.shape / voxel_size)
        return cell.begin + voxel * voxel_size - centre


def sample_sources(
    samples: Sequence[Sample],
    raw: gp.ArrayKey,
    gt: gp.ArrayKey,
    mask: gp.ArrayKey | None = None,
    weights: Sequence[float] | None = None,
    random_shift: gp.ArrayKey | None = None,
    sample_index: gp.ArrayKey | None = None,
    pad: bool = True,
) -> gp.Pipeline:
    """``SampleSource + RandomLabelledLocation`` per sample, combined by a
    ``gp.RandomProvider`` drawing sample ``i`` with probability proportional
    to ``samples[i].labelled_volume * weights[i]`` (weights default to 1).
    ``sample_index`` (optional key) receives the index of the drawn sample.
    With ``pad`` (the default), raw is 0 beyond each raw volume (see
    :class:`SampleSource`): every labelled voxel can be the centre of any
    request, so no request fails on the data's geometry; ``pad=False`` keeps
    every request inside the raw volumes (centres where it fits)."""
    samples = list(samples)
    if not samples:
        raise ValueError("sample_sources: no samples")
    weights = [1.0] * len(samples) if weights is None else [float(w) for w in weights]
    if len(weights) != len(samples) or any(w < 0 for w in weights) or sum(weights) == 0:
        raise ValueError(
            f"sample_sources: weights {weights} must be {len(samples)} non-negative numbers, "
            "not all 0"
        )
    sources = tuple(
        SampleSource(s, raw, gt, mask, pad) + RandomLabelledLocation(s, random_shift)
        for s in samples
    )
    probabilities = [s.labelled_volume * w for s, w in zip(samples, weights, strict=True)]
    return sources + gp.RandomProvider(
        probabilities=probabilities, random_provider_key=sample_index
    )
