"""Turn a ``2C``-channel hot-distance prediction into probabilities and masks."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from scipy.special import expit


def _as_numpy(prediction: npt.ArrayLike | torch.Tensor) -> npt.NDArray[np.floating]:
    """``prediction`` as a float numpy array ``(2C, *spatial)``."""
    if isinstance(prediction, torch.Tensor):
        prediction = prediction.detach().cpu().numpy()
    array = np.asarray(prediction)
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    if array.ndim < 2 or array.shape[0] % 2 != 0:
        raise ValueError(f"prediction must have shape (2C, *spatial), got shape {array.shape}")
    return array


def probabilities(prediction: npt.ArrayLike | torch.Tensor) -> npt.NDArray[np.floating]:
    """Sigmoid of the ``C`` hot channels, followed by the ``C`` distance channels unchanged.

    Args:
        prediction: Raw model output ``(2C, *spatial)``, hot channels as logits.

    Raises:
        ValueError: If ``prediction`` has fewer than 2 axes or an odd channel count.
    """
    array = _as_numpy(prediction)
    classes = array.shape[0] // 2
    return np.concatenate([expit(array[:classes]), array[classes:]]).astype(array.dtype)


def segment(
    prediction: npt.ArrayLike | torch.Tensor, threshold: float = 0.5
) -> npt.NDArray[np.bool_]:
    """Binary segmentation ``(C, *spatial)``: ``sigmoid(hot) > threshold`` per class.

    Args:
        prediction: Raw model output ``(2C, *spatial)``, hot channels as logits.
        threshold: Probability threshold in ``(0, 1)``.

    Raises:
        ValueError: If ``threshold`` is outside ``(0, 1)`` or ``prediction`` has
            fewer than 2 axes or an odd channel count.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got threshold={threshold!r}")
    array = _as_numpy(prediction)
    return expit(array[: array.shape[0] // 2]) > threshold
