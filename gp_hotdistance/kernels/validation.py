"""Checks of the kernels' inputs (voxel sizes, binary channels, masks,
moving counts) and of the predictor's parameters (finite numbers, channel
names), with errors that name the argument and the offending values."""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

MovingCounts = list[dict[int, tuple[float, float]]]

SUPPORTED_DIMS = (2, 3)

# How many distinct offending values an error message lists.
_SHOWN_VALUES = 5


def is_integer(value: object) -> bool:
    """True for Python and numpy integers; False for bools and everything else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value: object) -> bool:
    """True for Python and numpy integers and floats; False for bools,
    strings and everything else."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_finite(name: str, value: object) -> float:
    """``value`` as a float, checked to be a finite real number (numpy
    scalars included, bools excluded).

    Raises:
        TypeError: ``value`` is not a real number.
        ValueError: ``value`` is NaN, infinite or too large for a float.
    """
    if not is_real(value):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    try:
        as_float = float(value)
    except OverflowError:
        as_float = math.inf
    if not math.isfinite(as_float):
        raise ValueError(f"{name} must be finite, got {name}={value!r}")
    return as_float


def check_voxel_size(
    voxel_size: Sequence[float], dims: int | None = None, name: str = "voxel_size"
) -> tuple[float, ...]:
    """``voxel_size`` as a tuple, checked: real numbers (numpy scalars
    included), finite and positive, ``dims`` entries when given.

    Raises:
        TypeError: ``voxel_size`` is not a sequence of real numbers.
        ValueError: an entry is zero, negative or not finite, or the length
            is not ``dims``.
    """
    if isinstance(voxel_size, (str, bytes)) or not isinstance(voxel_size, Iterable):
        raise TypeError(f"{name} must be a sequence of numbers, got {voxel_size!r}")
    values = tuple(voxel_size)
    if not all(is_real(v) for v in values):
        raise TypeError(f"{name} must hold real numbers, got {values!r}")
    if dims is not None and len(values) != dims:
        raise ValueError(f"{name} must have {dims} entries (one per spatial axis), got {values!r}")
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"{name} must be positive and finite on every axis, got {values!r}")
    return values


def check_not_empty(array: npt.NDArray, name: str = "array") -> None:
    """Raise ``ValueError`` if ``array`` has no elements (an axis of length 0)."""
    if array.size == 0:
        raise ValueError(f"{name} is empty: shape {array.shape} has an axis of length 0")


# Class ids are compared with label values of any integer dtype up to uint64.
MAX_CLASS_ID = int(np.iinfo(np.uint64).max)


def check_class_ids(class_ids: object, classes: int) -> tuple[int, ...]:
    """``class_ids`` as a tuple of Python ints, checked: ``classes`` (at
    least one) unique integers in ``[0, 2**64)``, the range of label dtypes.

    Raises:
        TypeError: not a sequence of integers (bools and floats such as
            ``1.0`` included).
        ValueError: empty, an id out of range, duplicates, or not
            ``classes`` ids.
    """
    if isinstance(class_ids, (str, bytes)) or not isinstance(class_ids, Sequence):
        raise TypeError(f"class_ids must be a list of integers, got {class_ids!r}")
    ids = list(class_ids)
    if not ids:
        raise ValueError("class_ids must name at least one class id, got []")
    if not all(is_integer(i) for i in ids):
        raise TypeError(f"class_ids must be integers, got {ids!r}")
    for i in ids:
        if not 0 <= i <= MAX_CLASS_ID:
            raise ValueError(
                f"class_ids must lie in [0, 2**64), the range of label dtypes, "
                f"got {i!r} in class_ids={ids!r}"
            )
    if len(ids) != classes or len(set(ids)) != len(ids):
        raise ValueError(f"class_ids must hold one unique id per channel ({classes}), got {ids!r}")
    return tuple(int(i) for i in ids)


def to_channels(labels: npt.NDArray, class_ids: Sequence[int]) -> npt.NDArray[np.uint8]:
    """Convert an integer class-id volume ``(*spatial)`` to binary channels.

    Channel ``i`` is 1 where ``labels == class_ids[i]``; ids not in
    ``class_ids`` are background in every channel. Works for any integer
    dtype, uint64 included (no cast, so no wrap-around).

    Raises:
        TypeError: ``labels`` is not an integer or boolean array, or a class
            id is not an integer.
        ValueError: ``class_ids`` is empty, out of range or holds duplicates
            (see :func:`check_class_ids`).
    """
    labels = np.asarray(labels)
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise TypeError(f"class-id labels must have an integer dtype, got dtype={labels.dtype}")
    ids = check_class_ids(class_ids, len(class_ids))
    out = np.empty((len(ids),) + labels.shape, dtype=np.uint8)
    for i, class_id in enumerate(ids):
        np.equal(labels, class_id, out=out[i], casting="unsafe")
    return out


def check_binary(gt: npt.NDArray, name: str = "gt") -> None:
    """Raise unless ``gt`` is a bool/integer/float array holding only 0 and 1.

    Raises:
        TypeError: the dtype is not bool, integer or floating point.
        ValueError: a value other than 0 or 1 occurs (NaN included).
    """
    kind = gt.dtype.kind
    if kind not in "biuf":
        raise TypeError(f"{name} must be a bool, integer or float array, got dtype={gt.dtype}")
    if kind == "b" or gt.size == 0:
        return
    if kind in "iu" and gt.min() >= 0 and gt.max() <= 1:  # one pass each, no temporaries
        return
    bad = (gt != 0) & (gt != 1)
    if bad.any():
        values = np.unique(gt[bad])[:_SHOWN_VALUES]
        raise ValueError(f"{name} must be binary (0/1) per channel, found values {values.tolist()}")


def check_mask(mask: npt.NDArray, name: str = "mask") -> None:
    """Raise unless every value of ``mask`` lies in ``[0, 1]``.

    Masks weigh voxels: 1 = annotated, 0 = unknown. Float masks may hold
    fractional weights in between; integer masks therefore hold only 0 and
    1 (so a 0/255 mask is an error, never a weight of 255); bool masks are
    always valid. NaN and infinities are errors.

    Raises:
        TypeError: the dtype is not bool, integer or floating point.
        ValueError: a value is NaN or outside ``[0, 1]``; the message lists
            up to five of them.
    """
    kind = mask.dtype.kind
    if kind not in "biuf":
        raise TypeError(f"{name} must be a bool, integer or float array, got dtype={mask.dtype}")
    if kind == "b" or mask.size == 0:
        return
    # min/max propagate NaN, and every comparison with NaN is False
    if mask.min() >= 0 and mask.max() <= 1:
        return
    bad = ~((mask >= 0) & (mask <= 1))
    values = np.unique(mask[bad])[:_SHOWN_VALUES]
    rule = "finite values in [0, 1]" if kind == "f" else "only 0 and 1"
    raise ValueError(
        f"{name} must hold {rule} (1 = annotated, 0 = unknown), found "
        f"{int(bad.sum())} voxels with values such as {values.tolist()}"
    )


def check_dims(ndim: int, name: str = "array") -> None:
    """Raise ``ValueError`` unless ``ndim`` spatial dimensions are supported."""
    if ndim not in SUPPORTED_DIMS:
        raise ValueError(f"{name} must have 2 or 3 spatial dimensions, got {ndim}")


def broadcast_mask(
    mask: npt.NDArray | None, shape: tuple[int, ...], name: str = "mask"
) -> npt.NDArray:
    """Return ``mask`` as a ``(C, *spatial)`` view for channel shape ``shape``.

    ``None`` means all ones (float32); a ``(*spatial)`` mask is broadcast to
    every channel. The values are checked with :func:`check_mask`.

    Raises:
        ValueError: the mask shape is neither ``shape`` nor ``shape[1:]``, or
            a value is NaN or outside ``[0, 1]`` (integer masks: not 0/1).
        TypeError: the mask dtype is not bool, integer or floating point.
    """
    if mask is None:
        return np.ones(shape, dtype=np.float32)
    mask = np.asarray(mask)
    if mask.shape == shape:
        check_mask(mask, name)
        return mask
    if mask.shape == shape[1:]:
        check_mask(mask, name)
        return np.broadcast_to(mask, shape)
    raise ValueError(
        f"{name} shape {mask.shape} matches neither the channels {shape} "
        f"nor the spatial shape {shape[1:]}"
    )


def check_moving_counts(counts: object, channels: int, name: str = "moving_counts") -> MovingCounts:
    """``counts`` as :data:`MovingCounts`, checked: a list of ``channels``
    dicts, each holding exactly the classes 0 and 1 (ints) mapped to a pair
    ``(num, den)`` of finite real numbers with ``num >= 0`` and ``den >= 1``
    (counts start at ``(0, 1)``; ``num`` only grows by voxel counts, ``den``
    by mask sums).

    Raises:
        TypeError: a container, key or number has the wrong type.
        ValueError: the number of channels, the classes or a value is wrong.
    """
    if not isinstance(counts, (list, tuple)):
        raise TypeError(f"{name} must be a list of {channels} dicts, got {counts!r}")
    if len(counts) != channels:
        raise ValueError(f"{name} holds {len(counts)} channels, expected {channels}")
    checked: MovingCounts = []
    for c, channel in enumerate(counts):
        where = f"{name}[{c}]"
        if not isinstance(channel, Mapping):
            raise TypeError(f"{where} must be a dict {{class: (num, den)}}, got {channel!r}")
        classes = {}
        for key, value in channel.items():
            if is_integer(key) and key in (0, 1):
                classes[int(key)] = value
            else:
                raise ValueError(f"{where} has class key {key!r}; the classes are 0 and 1")
        if sorted(classes) != [0, 1] or len(channel) != 2:
            raise ValueError(f"{where} must hold classes 0 and 1, got keys {list(channel)}")
        pairs = {}
        for class_id, value in sorted(classes.items()):
            if (
                isinstance(value, (str, bytes))
                or not isinstance(value, Sequence)
                or len(value) != 2
                or not all(is_real(v) for v in value)
            ):
                raise TypeError(
                    f"{where}[{class_id}] must be a pair (num, den) of numbers, got {value!r}"
                )
            num, den = value
            if not (math.isfinite(num) and math.isfinite(den) and num >= 0 and den >= 1):
                raise ValueError(
                    f"{where}[{class_id}] = {tuple(value)!r}: (num, den) must be finite "
                    "with num >= 0 and den >= 1"
                )
            pairs[class_id] = (num, den)
        checked.append(pairs)
    return checked


CHANNEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
"""What a channel name may be: it names datasets and files (``target/hot_<name>``),
so letters, digits, ``_``, ``.``, ``+``, ``-``, not starting with ``.``, ``+``
or ``-`` (no ``.``/``..``, no slashes, no spaces, no hidden names)."""


def check_channel_name(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` matches :data:`CHANNEL_NAME`."""
    if not CHANNEL_NAME.fullmatch(name):
        raise ValueError(
            f"channel name {name!r} is not safe as a file or dataset name: use letters, "
            "digits, '_', '.', '+' and '-', starting with a letter, digit or '_'"
        )


def check_channels(channels: object) -> list[str]:
    """``channels`` as a list, checked: a non-empty sequence of unique
    strings that match :data:`CHANNEL_NAME`."""
    if isinstance(channels, str) or not isinstance(channels, Sequence) or len(channels) == 0:
        raise ValueError(f"channels must be a non-empty list of names, got {channels!r}")
    names = list(channels)
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"channels must be non-empty strings, got {name!r} in {names}")
        check_channel_name(name)
    if len(set(names)) != len(names):
        raise ValueError(f"channels must be unique, got {names}")
    return names
