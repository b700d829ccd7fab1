"""Tiled prediction of whole arrays with a valid-convolution model.

::

    padded raw   |<-ctx->|<------- output region ------->|<-ctx->|
    tiles                 [ tile 0 ][ tile 1 ][ tile 2 ]...
    tile input   [<-ctx->[ tile 0 ]<-ctx->]

Output tiles of ``output_shape`` are laid from the first output voxel, so any
two calls whose output regions start on the same tile grid compute the same
tiles: blockwise prediction with blocks that are multiples of
``output_shape`` equals prediction in one piece.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch


def input_shape_for(model: torch.nn.Module, output_shape: Sequence[int]) -> tuple[int, ...]:
    """The input shape (voxels) whose output is exactly ``output_shape``.

    ``model`` exposes ``output_shape(input_shape)`` and its ``backbone`` (or
    itself) ``valid_input_shape(min_input_shape)``.

    Raises:
        ValueError: no input gives ``output_shape`` (not a multiple of the
            downsampling, say); the message names the nearest valid one.
    """
    output_shape = tuple(int(s) for s in output_shape)
    backbone = getattr(model, "backbone", model)
    probe = tuple(backbone.valid_input_shape(output_shape))
    context = tuple(i - o for i, o in zip(probe, model.output_shape(probe), strict=True))
    input_shape = tuple(o + c for o, c in zip(output_shape, context, strict=True))
    try:
        valid = tuple(model.output_shape(input_shape)) == output_shape
    except ValueError:
        valid = False
    if not valid:
        raise ValueError(
            f"output_shape {output_shape} is not produced by any input of this model; "
            f"input {probe} gives output {tuple(model.output_shape(probe))}"
        )
    return input_shape


def context_for(model: torch.nn.Module, output_shape: Sequence[int]) -> tuple[int, ...]:
    """Voxels of input the model needs on each side of an output region.

    Raises:
        ValueError: the model shrinks an axis by an odd number of voxels, so
            its context is not the same on both sides.
    """
    input_shape = input_shape_for(model, output_shape)
    shrink = tuple(i - o for i, o in zip(input_shape, output_shape, strict=True))
    if any(s % 2 for s in shrink):
        raise ValueError(
            f"the model shrinks its input by {shrink} voxels; tiled prediction needs an "
            f"even shrink (the same context on both sides)"
        )
    return tuple(s // 2 for s in shrink)


@torch.no_grad()
def predict_padded(
    model: torch.nn.Module,
    padded: npt.NDArray[np.float32],
    output_shape: Sequence[int],
    device: torch.device | str | None = None,
) -> npt.NDArray[np.float32]:
    """Predict the output region of ``padded`` (spatial, one input channel),
    which carries :func:`context_for` voxels of context on every side.

    Returns ``(channels, *output_region)`` float32, where the output region
    is ``padded.shape - 2 * context``.
    """
    output_shape = tuple(int(s) for s in output_shape)
    input_shape = input_shape_for(model, output_shape)
    context = context_for(model, output_shape)
    region = tuple(p - 2 * c for p, c in zip(padded.shape, context, strict=True))
    if any(r < 1 for r in region):
        raise ValueError(
            f"padded input {padded.shape} is too small for a context of {context} per side"
        )
    device = torch.device(device) if device is not None else next(model.parameters()).device
    tiles = [-(-r // o) for r, o in zip(region, output_shape, strict=True)]
    # zero-extend so that the last tiles are whole
    full = tuple(t * o + 2 * c for t, o, c in zip(tiles, output_shape, context, strict=True))
    source = np.zeros(full, dtype=np.float32)
    source[tuple(slice(0, s) for s in padded.shape)] = padded
    model = model.to(device).eval()
    out = None
    for index in itertools.product(*(range(t) for t in tiles)):
        begin = [i * o for i, o in zip(index, output_shape, strict=True)]
        window = tuple(slice(b, b + s) for b, s in zip(begin, input_shape, strict=True))
        x = torch.from_numpy(np.ascontiguousarray(source[window]))[None, None].to(device)
        y = model(x)[0].float().cpu().numpy()
        if out is None:
            out = np.zeros(
                (y.shape[0],) + tuple(t * o for t, o in zip(tiles, output_shape, strict=True)),
                dtype=np.float32,
            )
        out[
            (slice(None),)
            + tuple(slice(b, b + o) for b, o in zip(begin, output_shape, strict=True))
        ] = y
    return out[(slice(None),) + tuple(slice(0, r) for r in region)]


def predict_volume(
    model: torch.nn.Module,
    raw: npt.NDArray[np.float32],
    output_shape: Sequence[int],
    device: torch.device | str | None = None,
) -> npt.NDArray[np.float32]:
    """Predict every voxel of ``raw`` (spatial, normalised), reading zeros
    outside it. Returns ``(channels, *raw.shape)`` float32."""
    context = context_for(model, output_shape)
    padded = np.pad(np.asarray(raw, dtype=np.float32), [(c, c) for c in context])
    return predict_padded(model, padded, output_shape, device)
