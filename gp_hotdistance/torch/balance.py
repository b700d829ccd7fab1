"""Class-balanced loss weights on the device, with moving counts as buffers."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gp_hotdistance import functional as F
from gp_hotdistance.functional import MovingCounts
from gp_hotdistance.predictor import HotDistancePredictor


class BalancedWeights(torch.nn.Module):
    """Loss weights ``[hot x C, distance x C]`` for batched targets, the
    weights of :class:`~gp_hotdistance.WeightNode` computed on the device.

    ``balanced(target, mask, distance_mask)`` takes ``target`` ``(B, 2C,
    *spatial)`` (its hot channels are the labels) and ``mask``,
    ``distance_mask`` ``(B, C, *spatial)`` of any dtype (taken as float32)
    or ``None`` (all ones). Each of the ``2C`` channels is balanced between
    its two classes: hot channels over ``mask``, distance channels over
    ``mask * distance_mask``; a class of fraction ``frac`` (clipped to the
    predictor's ``[clipmin, clipmax]``) gets ``1 / (2 * frac)``, an absent
    class 0, and the weight is that times the mask product.

    With ``moving_counts`` the counts (buffers ``num`` and ``den``, ``(2C,
    2)`` float64, in the ``state_dict``) carry over from call to call and a
    batch of ``B`` counts as ``B`` consecutive samples: the weights equal
    those of ``WeightNode`` (or ``predictor.create_weight`` with moving
    counts) fed the same samples in order. Without, each sample is balanced
    on its own. Every call counts, in training and in eval mode.

    Under ``torch.distributed`` (a process group initialised, world size > 1)
    every call all-gathers each sample's class counts (``3 x 2C`` numbers
    per sample; every rank calls it at the same step with the same ``B``):
    the batches of ranks ``0 .. R-1`` count as one batch of ``R * B``
    consecutive samples, so all ranks keep the same counts, the counts of
    one process that saw every batch, and each rank's weights are that
    process's weights for its part.

    Args:
        predictor: Gives ``C`` and the clip range.
        moving_counts: Keep the counts across calls.
    """

    num: torch.Tensor
    den: torch.Tensor

    def __init__(self, predictor: HotDistancePredictor, moving_counts: bool = True) -> None:
        super().__init__()
        self.classes = predictor.classes
        self.clipmin = predictor.clipmin
        self.clipmax = predictor.clipmax
        self.moving_counts = bool(moving_counts)
        channels = predictor.embedding_dims
        self.register_buffer("num", torch.zeros(channels, 2, dtype=torch.float64))
        self.register_buffer("den", torch.ones(channels, 2, dtype=torch.float64))

    def counts(self) -> MovingCounts:
        """The moving counts as ``WeightNode`` keeps them: ``2C`` dicts
        ``{class: (num, den)}``, hot channels first."""
        num, den = self.num.tolist(), self.den.tolist()
        return [{c: (n[c], d[c]) for c in (0, 1)} for n, d in zip(num, den, strict=True)]

    def load_counts(self, counts: Sequence) -> None:
        """Set the moving counts from ``WeightNode``'s form (its
        ``moving_counts``, or :meth:`counts`).

        Raises:
            TypeError, ValueError: see
                :func:`gp_hotdistance.functional.check_moving_counts`.
        """
        checked = F.check_moving_counts(counts, self.num.shape[0])
        values = torch.tensor(
            [[list(channel[c]) for c in (0, 1)] for channel in checked], dtype=torch.float64
        )
        self.num.copy_(values[..., 0])
        self.den.copy_(values[..., 1])

    def _check(self, name: str, tensor: torch.Tensor | None, shape: tuple[int, ...]) -> None:
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ValueError(
                f"BalancedWeights: {name} must have shape {shape} (B, C, *spatial) to go with "
                f"target {(shape[0], 2 * shape[1], *shape[2:])}, got {tuple(tensor.shape)}"
            )

    def forward(
        self,
        target: torch.Tensor,
        mask: torch.Tensor | None = None,
        distance_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        classes = self.classes
        if target.dim() < 4 or target.shape[1] != 2 * classes:
            raise ValueError(
                f"BalancedWeights: target must have shape (B, {2 * classes}, *spatial) with 2 or "
                f"3 spatial axes, got {tuple(target.shape)}"
            )
        shape = (target.shape[0], classes, *target.shape[2:])
        self._check("mask", mask, shape)
        self._check("distance_mask", distance_mask, shape)
        with torch.no_grad():
            labels = target[:, :classes].bool().flatten(2)  # != 0, faster
            hot = None if mask is None else mask.flatten(2).to(torch.float32)
            distance = hot
            if distance_mask is not None:
                distance = distance_mask.flatten(2).to(torch.float32)
                if hot is not None:
                    distance = hot * distance
            # per sample and channel (hot channels, then distance channels):
            # masked-in sum, background and foreground counts
            stats = torch.cat([_class_counts(labels, hot), _class_counts(labels, distance)], 1)
            stats, first = self._gather(stats)
            present = stats[..., 1:] > 0
            if self.moving_counts:
                total = stats.cumsum(dim=0)
                den = self.den + total[..., :1]
                num = self.num + total[..., 1:]
                self.den.copy_(den[-1])
                self.num.copy_(num[-1])
            else:
                den = 1.0 + stats[..., :1]
                num = stats[..., 1:]
            frac = (num / den).clamp(self.clipmin, self.clipmax)
            weight = torch.where(present, 1.0 / (2.0 * frac), 0.0).to(torch.float32)
            w0, w1 = weight[first : first + target.shape[0], :, :, None].unbind(2)
            # each voxel's class weight as lab * w1 + (1 - lab) * w0, exact
            # since one of the two terms is 0 (much faster than torch.where
            # with per-channel weights on the CPU), times the scale
            foreground = labels.to(torch.float32)
            background = 1.0 - foreground
            weights = torch.empty(target.shape, dtype=torch.float32, device=target.device)
            flat = weights.view(*target.shape[:2], -1)
            for part, scale in ((slice(0, classes), hot), (slice(classes, None), distance)):
                out = flat[:, part]
                torch.mul(foreground, w1[:, part], out=out)
                out.addcmul_(background, w0[:, part])
                if scale is not None:
                    out.mul_(scale)
            return weights

    def _gather(self, stats: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Every rank's ``stats`` in rank order and where this rank's begin."""
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return stats, 0
        parts = [torch.empty_like(stats) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, stats.contiguous())
        return torch.cat(parts), dist.get_rank() * stats.shape[0]


def _class_counts(labels: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """``(B, C, 3)`` float64: per sample and channel of flat ``(B, C, N)``
    bool ``labels`` and float32 ``scale`` (``None``: all ones), ``sum(scale)``
    and the background and foreground voxels where ``scale != 0``. The
    counts are exact integer sums, in int32 where ``N`` allows (several
    times faster than int64 on the CPU)."""
    size = labels.shape[-1]
    count = torch.int32 if size < 2**31 else torch.int64
    if scale is None:
        foreground = labels.sum(-1, dtype=count).to(torch.float64)
        known = torch.full_like(foreground, float(size))
        masked_in = known
    else:
        known_voxels = scale.bool()  # scale != 0, several times faster
        foreground = (known_voxels & labels).sum(-1, dtype=count).to(torch.float64)
        known = known_voxels.sum(-1, dtype=count).to(torch.float64)
        masked_in = scale.sum(-1, dtype=torch.float64)
    return torch.stack([masked_in, known - foreground, foreground], dim=-1)
