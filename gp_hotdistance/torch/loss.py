"""The hot-distance loss: weighted BCE on the hot channels, weighted MSE on the distances."""

from __future__ import annotations

import torch


class HotDistanceLoss(torch.nn.Module):
    """``mean(w_hot * BCEWithLogits(p_hot, t_hot)) + mean(w_dist * (p_dist - t_dist)**2)``.

    Prediction, target and weights share one shape, ``(B, 2C, *spatial)`` or
    ``(2C, *spatial)``, channels laid out as ``[hot x C, distance x C]``. The
    prediction's hot channels are logits. The weights multiply each term
    linearly (DaCapo's ``MSELoss(p * w, t * w)`` squares them; this does not).

    Args:
        dims: Number of spatial axes (2 or 3). Needed only for 4-D tensors, which
            are either batched 2-D or unbatched 3-D; 3-D tensors are read as
            unbatched 2-D and 5-D tensors as batched 3-D.

    Raises:
        ValueError: In ``forward``, if the shapes differ, the channel count is
            odd, or the channel axis cannot be told from the tensor rank.
    """

    def __init__(self, dims: int | None = None) -> None:
        super().__init__()
        if dims not in (None, 2, 3):
            raise ValueError(f"dims must be 2, 3 or None, got dims={dims!r}")
        self.dims = dims

    def _channel_axis(self, ndim: int) -> int:
        if self.dims is not None:
            if ndim not in (self.dims + 1, self.dims + 2):
                raise ValueError(
                    f"tensors with dims={self.dims} must have {self.dims + 1} or "
                    f"{self.dims + 2} axes, got {ndim}"
                )
            return ndim - self.dims - 1
        if ndim == 3:
            return 0
        if ndim == 5:
            return 1
        raise ValueError(
            f"cannot tell the channel axis of a {ndim}-D tensor; "
            "pass HotDistanceLoss(dims=2) or HotDistanceLoss(dims=3)"
        )

    def forward(
        self, prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        if prediction.shape != target.shape or prediction.shape != weights.shape:
            raise ValueError(
                "prediction, target and weights must have the same shape, got "
                f"{tuple(prediction.shape)}, {tuple(target.shape)}, {tuple(weights.shape)}"
            )
        axis = self._channel_axis(prediction.dim())
        channels = prediction.shape[axis]
        if channels % 2 != 0:
            raise ValueError(
                f"the channel axis must hold 2C channels (hot + distance), got {channels}"
            )
        p_hot, p_dist = torch.split(prediction, channels // 2, dim=axis)
        t_hot, t_dist = torch.split(target, channels // 2, dim=axis)
        w_hot, w_dist = torch.split(weights, channels // 2, dim=axis)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(p_hot, t_hot, reduction="none")
        return torch.mean(w_hot * bce) + torch.mean(w_dist * (p_dist - t_dist) ** 2)
