"""Configuration of the training, preview and blockwise pipelines.

A config is a JSON or YAML file with the sections below; every key is
optional and falls back to the defaults here::

    channels: [mito, er]
    scale_factor: 40.0
    mask_distances: true
    data:                          # default (no data section): the generated demo
      voxel_size: [8, 8, 8]        # training voxel size, world units
      samples:
        - raw: jrc_x.zarr/recon-1/em/fibsem-uint8
          labels: jrc_x.zarr/recon-1/labels/groundtruth/crop7/[mito,er]
        - raw: jrc_x.zarr/recon-1/em/fibsem-uint8
          labels: {mito: jrc_x.zarr/recon-1/labels/groundtruth/crop9/mito}
          mask: null               # optional annotated-region mask (1 = known)
          weight: 1.0              # optional sampling weight (> 0)
      eval:                        # optional evaluation crops (a list, or one mapping)
        - {raw: ..., labels: ...}
      class_ids: [1, 2]            # only with class-id labels: ``labels: path/to/ids``
      skip_unusable: false         # true: skip samples that cannot be used, with a warning
      upsample: true               # raw coarser than voxel_size: interpolated (false: refused)
      datasplit: split.csv         # optional: train rows added to samples, validate rows to eval
    model: {num_fmaps: 12, fmap_inc_factor: 2, num_convs: 2, head_kernel_size: 1,
            downsample_factors: [[2, 2], [2, 2]], output_shape: [64, 64]}
    training: {iterations: 4000, batch_size: 1, learning_rate: 0.001, ...}

``labels`` is a bracket template (see :func:`expand_labels`, which is
:func:`gp_hotdistance.data.expand_label_template`), a mapping from class to
dataset, or a plain path to one class-id dataset.

Paths (every path of a sample) are absolute or
relative to the directory of the config file; :func:`load_config` makes them
absolute. Paths holding ``://`` (URLs) are kept as they are.

Unknown keys, wrong types and out-of-range values are refused with one
:class:`ConfigError` naming each key path and its value. Reading the files
(the config file, the datasplit CSV) is :mod:`pipelines.config_io`'s part.

Repeatability: ``training.seed`` seeds torch (the network's initial
weights) and every data stream of :class:`gp_hotdistance.torch.HotDistanceDataset`:
the batch of an iteration follows from the seed, the iteration, the rank,
``training.num_workers`` and ``training.batch_size``, in every run, resumed
or not (a resumed run continues the streams where the checkpoint left them).
A run resumed with another number of workers or processes draws other
batches. CUDA kernels may add non-determinism of their own.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import (
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass

# cellmap-data's bracket template: "crop7/[mito,er]" -> {"mito": "crop7/mito",
# "er": "crop7/er"}; a template without exactly one [...] group is a ValueError
from gp_hotdistance.data import expand_label_template as expand_labels
from gp_hotdistance.kernels.validation import check_channel_name
from pipelines.config_io import ConfigError, expand_datasplit, read_config_file

#: Largest side of ``model.output_shape``, in voxels.
MAX_OUTPUT_SIDE = 4096
#: Most voxels in ``model.output_shape`` (256**3 = 4096**2). The first layer
#: alone holds ``batch_size * num_fmaps * voxels`` float32 values, so a typo
#: such as ``[2048, 2048, 2048]`` would otherwise ask for tens of GiB before
#: failing.
MAX_OUTPUT_VOXELS = 2**24

_SECTION = ConfigDict(extra="forbid", allow_inf_nan=False)

PositiveInt = Annotated[StrictInt, Field(ge=1)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
Name = Annotated[StrictStr, Field(min_length=1)]
# union tags name the form in error locations; _locate drops them
_TEMPLATE = "(template)"
_MAPPING = "(mapping)"
_UNION_TAGS = {_TEMPLATE, _MAPPING}

# keys of the single-container form that this project no longer reads
_CONTAINER_KEYS = {"container", "raw", "gt", "mask", "eval_raw", "eval_gt"}
SAMPLES_FORM_HELP = (
    "Write the data section as\n"
    "  data:\n"
    "    voxel_size: [8, 8, 8]        # training voxel size, world units\n"
    "    samples:\n"
    "      - raw: data.zarr/raw          # OME-NGFF multiscale group or funlib array\n"
    "        labels: data.zarr/labels    # class-id dataset (with class_ids), or\n"
    "                                    # {mito: path, er: path}, or crop/[mito,er]\n"
    "        mask: data.zarr/mask        # optional, 1 = annotated\n"
    "    eval: {raw: ..., labels: ...}   # optional held-out sample\n"
    "(paths relative to the config file; see the README)"
)


def _resolve(path: str | None, info: ValidationInfo) -> str | None:
    """``path`` joined to the ``base_dir`` of the validation context (the
    config file's directory) unless absolute or a URL."""
    base = (info.context or {}).get("base_dir")
    if path is None or base is None or "://" in path or Path(path).is_absolute():
        return path
    return str(Path(base) / path)


def _labels_form(value: Any) -> str:
    return _MAPPING if isinstance(value, Mapping) else _TEMPLATE


Labels = Annotated[
    Annotated[Name, Tag(_TEMPLATE)] | Annotated[dict[Name, Name], Tag(_MAPPING)],
    Discriminator(_labels_form),
]


@dataclass(frozen=True, config=_SECTION)
class SampleConfig:
    """One sample: a ``raw`` volume, its ``labels`` (template, mapping from
    class to dataset, or one class-id dataset) and an optional ``mask`` of
    the annotated region (1 = known)."""

    raw: Name
    labels: Labels
    mask: Name | None = None

    @field_validator("raw", "mask")
    @classmethod
    def _resolve_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _resolve(value, info)

    @field_validator("labels")
    @classmethod
    def _resolve_labels(cls, value: str | dict[str, str], info: ValidationInfo) -> Any:
        if isinstance(value, dict):
            return {name: _resolve(path, info) for name, path in value.items()}
        if "[" in value or "]" in value:
            expand_labels(value)  # a malformed template is refused here
        return _resolve(value, info)

    @property
    def label_datasets(self) -> dict[str, str] | None:
        """Class -> dataset path; ``None`` when ``labels`` is one class-id
        dataset (then ``labels`` is its path)."""
        if isinstance(self.labels, dict):
            return dict(self.labels)
        if "[" in self.labels:
            return expand_labels(self.labels)
        return None


@dataclass(frozen=True, config=_SECTION)
class TrainingSampleConfig(SampleConfig):
    """A training sample; ``weight`` scales how often it is drawn."""

    weight: Annotated[StrictFloat, Field(gt=0)] = 1.0


@dataclass(frozen=True, config=_SECTION)
class SamplesDataConfig:
    """The ``data`` section: the training ``voxel_size`` (world units, one
    per axis), at least one training sample, the evaluation samples ``eval``
    (a list; one mapping is read as a list of one; scores are pooled over
    them), for class-id labels only, ``class_ids``, and ``skip_unusable``:
    skip the samples that cannot be used (no labelled voxel inside their raw
    volume, say) with a warning instead of refusing the run (see
    ``pipelines.batches.open_data``), and ``upsample``: read raw coarser than
    ``voxel_size`` (by integer factors) by linear interpolation; ``false``
    refuses those samples instead. ``datasplit``: a datasplit CSV (see
    :mod:`gp_hotdistance.data.datasplit`) whose ``train`` rows are added to
    ``samples`` and ``validate`` rows to ``eval`` when the config is read."""

    voxel_size: list[PositiveInt]
    samples: Annotated[list[TrainingSampleConfig], Field(min_length=1)]
    eval: list[SampleConfig] = dataclasses.field(default_factory=list)
    class_ids: list[NonNegativeInt] | None = None
    skip_unusable: StrictBool = False
    upsample: StrictBool = True
    datasplit: Name | None = None

    @field_validator("eval", mode="before")
    @classmethod
    def _eval_list(cls, value: Any) -> Any:
        if value is None:
            return []
        return [value] if isinstance(value, Mapping | SampleConfig) else value


def _with_datasplit(data: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    """``data`` with its ``datasplit`` rows added (see
    :func:`pipelines.config_io.expand_datasplit`): the path taken from the
    config file's directory, the channels those given (the default ones when
    not given, or refused: that is reported on its own)."""
    path = data["datasplit"]
    if not isinstance(path, str) or not path:
        raise ValueError(f"datasplit must be a path, got {path!r}")
    channels = info.data.get("channels")
    if channels is None:
        channels = next(f for f in dataclasses.fields(Config) if f.name == "channels")
        channels = channels.default_factory()
    return expand_datasplit(data, _resolve(path, info), channels)


@dataclass(frozen=True, config=_SECTION)
class ModelConfig:
    """UNet backbone and head; ``output_shape`` in voxels (the input shape
    follows from the network). ``head_kernel_size`` must be odd: the
    backbone shrinks every axis by an even number of voxels and the head by
    ``head_kernel_size - 1``, and tiled prediction needs the same context on
    both sides."""

    num_fmaps: PositiveInt = 12
    fmap_inc_factor: PositiveInt = 2
    downsample_factors: Annotated[list[list[PositiveInt]], Field(min_length=1)] = dataclasses.field(
        default_factory=lambda: [[2, 2], [2, 2]]
    )
    num_convs: PositiveInt = 2
    head_kernel_size: PositiveInt = 1
    output_shape: Annotated[list[PositiveInt], Field(min_length=2, max_length=3)] = (
        dataclasses.field(default_factory=lambda: [64, 64])
    )

    @field_validator("head_kernel_size")
    @classmethod
    def _odd_head(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(
                f"must be odd, got {value}: an even head kernel shrinks "
                f"the output by an odd number of voxels, so the model's context is not the "
                f"same on both sides and tiled prediction is impossible"
            )
        return value

    @field_validator("output_shape")
    @classmethod
    def _bounded_output(cls, value: list[int]) -> list[int]:
        if max(value) > MAX_OUTPUT_SIDE or math.prod(value) > MAX_OUTPUT_VOXELS:
            raise ValueError(
                f"{value} is too large: at most {MAX_OUTPUT_SIDE} voxels per "
                f"side and {MAX_OUTPUT_VOXELS} in total (MAX_OUTPUT_SIDE, MAX_OUTPUT_VOXELS "
                f"in pipelines/config.py)"
            )
        return value


@dataclass(frozen=True, config=_SECTION)
class TrainingConfig:
    """Optimisation and pipeline settings. The learning rate decays along a
    half cosine from ``learning_rate`` to ``final_lr_fraction`` of it over
    ``iterations``. ``device``: ``auto`` (CUDA when present), ``cpu`` or
    ``cuda``. ``num_workers``: DataLoader worker processes (0: the data is
    drawn in the training process); ``cache_size``: about how many batches
    they keep ready; ``profile_every``: how often the time spent waiting
    for data and stepping is logged (INFO). ``seed``: see the module
    docstring for what it makes repeatable."""

    iterations: PositiveInt = 4000
    batch_size: PositiveInt = 1
    learning_rate: Annotated[StrictFloat, Field(gt=0)] = 1e-3
    final_lr_fraction: Annotated[StrictFloat, Field(ge=0, le=1)] = 0.05
    save_every: PositiveInt = 500
    snapshot_every: PositiveInt = 500
    profile_every: PositiveInt = 500
    num_workers: NonNegativeInt = 1
    cache_size: PositiveInt = 8
    seed: Annotated[StrictInt, Field(ge=0, lt=2**32)] = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    augment: StrictBool = True


@dataclass(frozen=True, config=_SECTION)
class Config:
    """Everything a training run needs; ``data=None`` is the demo (generated
    into the run directory, see :func:`pipelines.batches.resolve_data`)."""

    channels: Annotated[list[Name], Field(min_length=1)] = dataclasses.field(
        default_factory=lambda: ["mito", "er"]
    )
    scale_factor: Annotated[StrictFloat, Field(gt=0)] = 40.0
    mask_distances: StrictBool = True
    data: SamplesDataConfig | None = None
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)

    @field_validator("data", mode="before")
    @classmethod
    def _samples_form(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, Mapping):
            old = sorted(_CONTAINER_KEYS & set(value))
            if old:
                raise ValueError(
                    f"the keys {old} belong to the single-container form, which is "
                    f"no longer read. {SAMPLES_FORM_HELP}"
                )
            if value.get("datasplit") is not None:
                return _with_datasplit(dict(value), info)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        channels, dims = self.channels, self.dims
        if len(set(channels)) != len(channels):
            raise ValueError(f"channels must be unique, got {channels}")
        for name in channels:
            check_channel_name(name)
        for factors in self.model.downsample_factors:
            if len(factors) != dims:
                raise ValueError(
                    f"model.downsample_factors entries must be {dims} positive ints (one per "
                    f"axis of model.output_shape {self.model.output_shape}), got {factors}"
                )
        class_ids = None if self.data is None else self.data.class_ids
        if class_ids is not None and (
            len(class_ids) != len(channels) or len(set(class_ids)) != len(class_ids)
        ):
            raise ValueError(
                f"data.class_ids must hold one unique id per channel {channels}, got {class_ids}"
            )
        if self.data is not None:
            self._check_samples(self.data)
        return self

    def _check_samples(self, data: SamplesDataConfig) -> None:
        if len(data.voxel_size) != self.dims:
            raise ValueError(
                f"data.voxel_size {data.voxel_size} must have {self.dims} entries, one per axis "
                f"of model.output_shape {self.model.output_shape}"
            )
        named = [(f"data.samples[{i}]", s) for i, s in enumerate(data.samples)]
        named += [(f"data.eval[{i}]", s) for i, s in enumerate(data.eval)]
        for where, sample in named:
            classes = sample.label_datasets
            if classes is None:
                continue
            if data.class_ids is not None:
                raise ValueError(
                    f"data.class_ids applies to class-id labels (one dataset), but {where}.labels "
                    f"names a dataset per class; drop data.class_ids or give one dataset"
                )
            unknown = [name for name in classes if name not in self.channels]
            if unknown:
                raise ValueError(
                    f"{where}.labels names class(es) {unknown} that are not in channels "
                    f"{self.channels}"
                )

    @property
    def dims(self) -> int:
        """Spatial dimensions (2 or 3): the length of ``model.output_shape``."""
        return len(self.model.output_shape)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable values; :func:`from_dict` reads them back."""
        return dataclasses.asdict(self)

    def replace(self, **sections: Any) -> Config:
        """A validated copy with whole sections or top-level values replaced.

        Raises:
            ConfigError: the result is not a valid config.
        """
        try:
            return dataclasses.replace(self, **sections)
        except pydantic.ValidationError as error:
            raise _config_error(error, "config") from None


# the section class whose keys are listed for an unknown key, by the loc
# element before it
_KEYS_OF = {
    (): Config,
    ("data",): SamplesDataConfig,
    ("eval",): SampleConfig,
    ("model",): ModelConfig,
    ("training",): TrainingConfig,
}


def _locate(loc: tuple[str | int, ...]) -> str:
    """``("data", "(samples form)", "samples", 0, "raw")`` -> ``data.samples[0].raw``."""
    text = ""
    for part in loc:
        if part in _UNION_TAGS:
            continue
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "config"


def _known_keys(loc: tuple[str | int, ...]) -> list[str]:
    parent = loc[-2:-1]
    if parent and isinstance(parent[0], int):  # a list entry: a sample
        section = SampleConfig if loc[-3:-2] == ("eval",) else TrainingSampleConfig
    else:
        section = _KEYS_OF.get(parent)
    return [f.name for f in dataclasses.fields(section)] if section else []


def _config_error(error: pydantic.ValidationError, source: str) -> ConfigError:
    """One readable :class:`ConfigError` listing each error's key path and value."""
    lines = []
    for item in error.errors(include_url=False):
        where = _locate(item["loc"])
        if where == "config" and item["type"] == "value_error":  # Config's cross-key checks
            lines.append(item["ctx"]["error"])
        elif item["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
            lines.append(f"{where}: unknown key; known: {_known_keys(item['loc'])}")
        elif item["type"] == "value_error":  # our own checks name key and value
            lines.append(f"{where}: {item['ctx']['error']}")
        else:
            lines.append(f"{where}: {item['msg']}, got {item['input']!r}")
    if len(lines) == 1:
        return ConfigError(f"{source}: {lines[0]}")
    return ConfigError(f"{source} has {len(lines)} errors:\n  " + "\n  ".join(lines))


def from_dict(
    values: Mapping[str, Any], base_dir: str | Path | None = None, source: str = "config"
) -> Config:
    """Build and validate a config from a plain mapping. Relative paths are
    taken relative to ``base_dir`` (``None``: kept as they are).

    Raises:
        ConfigError: names each bad key path and its value (``source``
            prefixes the message).
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"{source} must be a mapping of sections, got {values!r}")
    base = None if base_dir is None else str(Path(base_dir).absolute())
    try:
        return pydantic.TypeAdapter(Config).validate_python(
            dict(values), context={"base_dir": base}
        )
    except pydantic.ValidationError as error:
        raise _config_error(error, source) from None


def load_config(path: str | Path | None) -> Config:
    """Read a JSON (``.json``) or YAML (``.yaml``/``.yml``) config, with
    relative paths taken from the file's directory; ``None`` gives the
    defaults (the demo).

    Raises:
        ConfigError: the file is missing, not UTF-8 text, empty, not a
            mapping, holds a key twice or has an invalid value (see
            :func:`pipelines.config_io.read_config_file`).
    """
    if path is None:
        return Config()
    path = Path(path)
    values = read_config_file(path)
    return from_dict(values, base_dir=path.parent, source=f"config file {path}")
