"""A U-Net backbone and the hot-distance head, in voxel units.

Shape bookkeeping for one spatial axis of a U-Net with two levels and
``padding="valid"`` (``k`` = kernel size, ``f`` = downsample factor)::

    in ──conv(k)×n──► s0 ─────────── crop ───────────┐
                       │ max-pool(f)                 ▼
                       └► s0/f ──conv(k)×n──► s1 ──up(f)──► concat ──conv(k)×n──► out

Every convolution shrinks an axis by ``k - 1``; pooling needs the axis to be
divisible by ``f``. ``UNet.output_shape`` follows this recipe exactly and
``UNet.valid_input_shape`` searches the smallest input that satisfies it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

Padding = Literal["valid", "same"]
Upsampling = Literal["transposed", "nearest"]
KernelSize = int | Sequence[int]


def _conv_class(dims: int) -> type[torch.nn.Conv2d] | type[torch.nn.Conv3d]:
    if dims == 2:
        return torch.nn.Conv2d
    if dims == 3:
        return torch.nn.Conv3d
    raise ValueError(f"dims must be 2 or 3, got dims={dims!r}")


def _as_tuple(value: KernelSize, dims: int, name: str) -> tuple[int, ...]:
    """``value`` as a ``dims``-tuple of positive ints; a single int is repeated."""
    values = (value,) * dims if isinstance(value, int) else tuple(value)
    if len(values) != dims or not all(isinstance(v, int) and v > 0 for v in values):
        raise ValueError(f"{name} must be a positive int or {dims} positive ints, got {value!r}")
    return values


class _ConvPass(torch.nn.Module):
    """Convolutions, each followed by the activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_sizes: Sequence[tuple[int, ...]],
        activation: str,
        padding: Padding,
    ) -> None:
        super().__init__()
        conv = _conv_class(len(kernel_sizes[0]))
        layers: list[torch.nn.Module] = []
        for kernel_size in kernel_sizes:
            pad = tuple(k // 2 for k in kernel_size) if padding == "same" else 0
            layers.append(conv(in_channels, out_channels, kernel_size, padding=pad))
            layers.append(getattr(torch.nn, activation)())
            in_channels = out_channels
        self.layers = torch.nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _center_crop(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Crop the trailing spatial axes of ``x`` to ``shape`` around the centre."""
    dims = len(shape)
    slices = [slice(None)] * (x.dim() - dims)
    for size, target in zip(x.shape[-dims:], shape, strict=True):
        start = (size - target) // 2
        slices.append(slice(start, start + target))
    return x[tuple(slices)]


class UNet(torch.nn.Module):
    """A 2-D or 3-D U-Net with crop-and-concat skip connections.

    Level ``i`` has ``num_fmaps * fmap_inc_factor**i`` feature maps; the output
    has ``num_fmaps`` (``num_out_channels``). All shapes are in voxels and
    exclude the batch and channel axes.

    Args:
        in_channels: Channels of the input.
        num_fmaps: Feature maps of the top level.
        fmap_inc_factor: Multiplier of the feature maps from one level to the next.
        downsample_factors: One factor per axis for each level transition, e.g.
            ``[(1, 2, 2), (2, 2, 2)]``; their length sets ``dims`` (2 or 3).
        kernel_size_down: Per level (``len(downsample_factors) + 1`` entries), the
            kernel sizes of its convolutions on the way down. Default: ``num_convs``
            convolutions of size 3.
        kernel_size_up: As ``kernel_size_down`` for the way up
            (``len(downsample_factors)`` entries, top level first).
        num_convs: Convolutions per level when the kernel sizes are not given.
        activation: Name of a ``torch.nn`` activation module, e.g. ``"ReLU"``.
        padding: ``"valid"`` (each convolution shrinks an axis by ``k - 1``) or
            ``"same"`` (odd kernels only, shapes are kept).
        upsampling: ``"transposed"`` (transposed convolution with kernel = stride
            = factor) or ``"nearest"`` (nearest upsampling, then a 1x1 convolution).

    Raises:
        ValueError: If an argument is out of range or the lengths disagree.
    """

    def __init__(
        self,
        in_channels: int,
        num_fmaps: int,
        fmap_inc_factor: int,
        downsample_factors: Sequence[Sequence[int]],
        kernel_size_down: Sequence[Sequence[KernelSize]] | None = None,
        kernel_size_up: Sequence[Sequence[KernelSize]] | None = None,
        num_convs: int = 2,
        activation: str = "ReLU",
        padding: Padding = "valid",
        upsampling: Upsampling = "transposed",
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("num_fmaps", num_fmaps),
            ("fmap_inc_factor", fmap_inc_factor),
            ("num_convs", num_convs),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {name}={value!r}")
        if len(downsample_factors) == 0 or any(isinstance(f, int) for f in downsample_factors):
            raise ValueError(
                "downsample_factors must be a non-empty list of per-axis factors, e.g. "
                f"[(1, 2, 2)], got downsample_factors={downsample_factors!r}"
            )
        dims = len(downsample_factors[0])
        if dims not in (2, 3):
            raise ValueError(
                f"dims must be 2 or 3, got dims={dims} from downsample_factors={downsample_factors!r}"
            )
        factors = [_as_tuple(f, dims, "downsample_factors entry") for f in downsample_factors]
        num_levels = len(factors) + 1
        if kernel_size_down is None:
            kernel_size_down = [[3] * num_convs] * num_levels
        if kernel_size_up is None:
            kernel_size_up = [[3] * num_convs] * (num_levels - 1)
        if len(kernel_size_down) != num_levels:
            raise ValueError(
                f"kernel_size_down needs {num_levels} levels (one more than downsample_factors), "
                f"got kernel_size_down={kernel_size_down!r}"
            )
        if len(kernel_size_up) != num_levels - 1:
            raise ValueError(
                f"kernel_size_up needs {num_levels - 1} levels (as many as downsample_factors), "
                f"got kernel_size_up={kernel_size_up!r}"
            )
        down = [
            [_as_tuple(k, dims, "kernel_size_down entry") for k in ks] for ks in kernel_size_down
        ]
        up = [[_as_tuple(k, dims, "kernel_size_up entry") for k in ks] for ks in kernel_size_up]
        if any(len(ks) == 0 for ks in down + up):
            raise ValueError("every level needs at least one convolution, got an empty kernel list")
        if padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got padding={padding!r}")
        if padding == "same" and any(k % 2 == 0 for ks in down + up for kk in ks for k in kk):
            raise ValueError("padding='same' needs odd kernel sizes")
        if upsampling not in ("transposed", "nearest"):
            raise ValueError(
                f"upsampling must be 'transposed' or 'nearest', got upsampling={upsampling!r}"
            )
        if not isinstance(getattr(torch.nn, activation, None), type):
            raise ValueError(
                f"activation must name a torch.nn module, got activation={activation!r}"
            )

        self.dims = dims
        self.downsample_factors = factors
        self.kernel_size_down = down
        self.kernel_size_up = up
        self.padding = padding
        self.num_out_channels = num_fmaps

        fmaps = [num_fmaps * fmap_inc_factor**level for level in range(num_levels)]
        conv = _conv_class(dims)
        pool = torch.nn.MaxPool2d if dims == 2 else torch.nn.MaxPool3d
        self.down = torch.nn.ModuleList(
            _ConvPass(
                in_channels if level == 0 else fmaps[level - 1],
                fmaps[level],
                down[level],
                activation,
                padding,
            )
            for level in range(num_levels)
        )
        self.pool = torch.nn.ModuleList(pool(f, stride=f) for f in factors)
        if upsampling == "transposed":
            transposed = torch.nn.ConvTranspose2d if dims == 2 else torch.nn.ConvTranspose3d
            self.upsample = torch.nn.ModuleList(
                transposed(fmaps[level + 1], fmaps[level], f, stride=f)
                for level, f in enumerate(factors)
            )
        else:
            self.upsample = torch.nn.ModuleList(
                torch.nn.Sequential(
                    torch.nn.Upsample(scale_factor=f, mode="nearest"),
                    conv(fmaps[level + 1], fmaps[level], 1),
                )
                for level, f in enumerate(factors)
            )
        self.up = torch.nn.ModuleList(
            _ConvPass(2 * fmaps[level], fmaps[level], up[level], activation, padding)
            for level in range(num_levels - 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, conv_pass in enumerate(self.down):
            x = conv_pass(x)
            if level < len(self.pool):
                skips.append(x)
                x = self.pool[level](x)
        for level in reversed(range(len(self.up))):
            x = self.upsample[level](x)
            skip = _center_crop(skips[level], x.shape[-self.dims :])
            x = self.up[level](torch.cat([skip, x], dim=1))
        return x

    def _axis_output_size(self, size: int, axis: int) -> int | None:
        """Output size along ``axis`` for input ``size``, None if invalid."""

        def convolve(size: int, kernel_sizes: list[tuple[int, ...]]) -> int:
            if self.padding == "same":
                return size
            return size - sum(k[axis] - 1 for k in kernel_sizes)

        skips = []
        for level, factor in enumerate(self.downsample_factors):
            size = convolve(size, self.kernel_size_down[level])
            if size < 1 or size % factor[axis] != 0:
                return None
            skips.append(size)
            size //= factor[axis]
        size = convolve(size, self.kernel_size_down[-1])
        for level in reversed(range(len(self.downsample_factors))):
            size *= self.downsample_factors[level][axis]
            if size < 1 or size > skips[level]:
                return None
            size = convolve(size, self.kernel_size_up[level])
        return size if size >= 1 else None

    def _check_shape(self, shape: Sequence[int], name: str) -> tuple[int, ...]:
        shape = tuple(shape)
        if len(shape) != self.dims or not all(isinstance(s, int) and s > 0 for s in shape):
            raise ValueError(f"{name} must be {self.dims} positive ints, got {name}={shape!r}")
        return shape

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """The spatial output shape (voxels) for a spatial ``input_shape``.

        Raises:
            ValueError: If ``input_shape`` has the wrong length, makes a feature map
                empty or is not divisible by a downsample factor at some level.
        """
        input_shape = self._check_shape(input_shape, "input_shape")
        output = []
        for axis, size in enumerate(input_shape):
            out = self._axis_output_size(size, axis)
            if out is None:
                raise ValueError(
                    f"input_shape={input_shape} is not valid for this UNet: axis {axis} "
                    f"(size {size}) becomes empty or is not divisible by the downsample "
                    f"factors {self.downsample_factors}; see valid_input_shape({input_shape})"
                )
            output.append(out)
        return tuple(output)

    def valid_input_shape(self, min_input_shape: Sequence[int]) -> tuple[int, ...]:
        """The smallest valid spatial input shape, axis by axis >= ``min_input_shape``."""
        min_input_shape = self._check_shape(min_input_shape, "min_input_shape")
        shape = []
        for axis, size in enumerate(min_input_shape):
            while self._axis_output_size(size, axis) is None:
                size += 1
            shape.append(size)
        return tuple(shape)

    def min_input_shape(self) -> tuple[int, ...]:
        """The smallest valid spatial input shape."""
        return self.valid_input_shape((1,) * self.dims)


class HotDistanceModel(torch.nn.Module):
    """A backbone followed by a ``ConvNd`` head with ``2C`` raw outputs.

    The head has no activation: hot channels are logits, distance channels
    regress ``tanh(d / scale_factor)``. The head convolution is valid, so it
    shrinks every spatial axis by ``kernel_size - 1`` voxels.

    Args:
        backbone: Any module with attributes ``dims`` and ``num_out_channels``.
        head: The convolution appended to ``backbone``.
    """

    def __init__(self, backbone: torch.nn.Module, head: torch.nn.Conv2d | torch.nn.Conv3d) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.dims: int = backbone.dims
        self.num_out_channels: int = head.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """The spatial output shape (voxels) for a spatial ``input_shape``.

        Raises:
            TypeError: If the backbone has no ``output_shape`` method.
            ValueError: If the backbone rejects ``input_shape`` or the head
                leaves an empty axis.
        """
        backbone_shape = getattr(self.backbone, "output_shape", None)
        if backbone_shape is None:
            raise TypeError(f"{type(self.backbone).__name__} has no output_shape method")
        shape = tuple(backbone_shape(input_shape))
        output = tuple(s - k + 1 for s, k in zip(shape, self.head.kernel_size, strict=True))
        if any(s < 1 for s in output):
            raise ValueError(
                f"input_shape={tuple(input_shape)} is too small: the backbone gives {shape} "
                f"and the head kernel {self.head.kernel_size} leaves {output}"
            )
        return output


def append_head(
    architecture: torch.nn.Module, out_channels: int, kernel_size: KernelSize
) -> HotDistanceModel:
    """Append a ``ConvNd(architecture.num_out_channels, out_channels, kernel_size)``.

    The convolution is ``Conv2d`` or ``Conv3d`` by ``architecture.dims``.

    Raises:
        ValueError: If ``architecture.dims`` is not 2 or 3, or ``out_channels`` or
            ``kernel_size`` is not positive.
    """
    dims = getattr(architecture, "dims", None)
    if dims not in (2, 3):
        raise ValueError(f"architecture.dims must be 2 or 3, got dims={dims!r}")
    if not isinstance(out_channels, int) or out_channels < 1:
        raise ValueError(f"out_channels must be a positive int, got out_channels={out_channels!r}")
    kernel = _as_tuple(kernel_size, dims, "kernel_size")
    head = _conv_class(dims)(architecture.num_out_channels, out_channels, kernel)
    return HotDistanceModel(architecture, head)
