"""Configuration of the training, preview and blockwise pipelines.

A config is a JSON or YAML file with the sections below; every key is
optional and falls back to the defaults here (the embedded demo)::

    channels: [mito, er]
    scale_factor: 40.0
    mask_distances: true
    data: {container: null, raw: raw, gt: gt, mask: mask,
           eval_raw: eval/raw, eval_gt: eval/gt}
    model: {num_fmaps: 12, fmap_inc_factor: 2,
            downsample_factors: [[2, 2], [2, 2]], output_shape: [64, 64]}
    training: {iterations: 4000, batch_size: 1, learning_rate: 0.001, ...}

``data.container: null`` means: generate the demo dataset into the output
directory. Unknown keys and wrong types are refused with a ``ConfigError``
naming the key and the value.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config file or value that cannot be used."""


@dataclass(frozen=True)
class SampleConfig:
    """One annotated sample: a raw volume, its labels (a bracket template
    ``.../crop7/[mito,er]``, a ``{class: path}`` mapping, or one class-id
    dataset path), an optional mask (1 = known) and a sampling weight."""

    raw: str
    labels: str | dict[str, str]
    mask: str | None = None
    weight: float = 1.0


@dataclass(frozen=True)
class DataConfig:
    """The data. New form: ``voxel_size`` (training voxel size, world
    units), ``samples`` and an optional held-out ``eval`` sample, paths
    absolute or relative to the config file. Old form (no ``samples``): a
    zarr ``container`` with ``raw``/``gt``/``mask``/``eval_raw``/``eval_gt``
    datasets; only ``container: null`` (the generated demo) is still read.
    ``class_ids``: one id per channel for a class-id labels dataset."""

    container: str | None = None
    raw: str = "raw"
    gt: str = "gt"
    mask: str | None = "mask"
    eval_raw: str | None = "eval/raw"
    eval_gt: str | None = "eval/gt"
    class_ids: list[int] | None = None
    voxel_size: list[int] | None = None
    samples: list[SampleConfig] | None = None
    eval: SampleConfig | None = None

    @property
    def new_form(self) -> bool:
        return self.samples is not None


@dataclass(frozen=True)
class ModelConfig:
    """UNet backbone and head; ``output_shape`` in voxels (the input shape
    follows from the network)."""

    num_fmaps: int = 12
    fmap_inc_factor: int = 2
    downsample_factors: list[list[int]] = field(default_factory=lambda: [[2, 2], [2, 2]])
    num_convs: int = 2
    head_kernel_size: int = 1
    output_shape: list[int] = field(default_factory=lambda: [64, 64])


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation and pipeline settings. The learning rate decays along a
    half cosine from ``learning_rate`` to ``final_lr_fraction`` of it over
    ``iterations``. ``device``: ``auto`` (CUDA when present), ``cpu`` or
    ``cuda``. ``num_workers``: PreCache processes (0: none)."""

    iterations: int = 4000
    batch_size: int = 1
    learning_rate: float = 1e-3
    final_lr_fraction: float = 0.05
    save_every: int = 500
    snapshot_every: int = 500
    profile_every: int = 500
    num_workers: int = 1
    cache_size: int = 8
    seed: int = 0
    device: str = "auto"
    augment: bool = True


@dataclass(frozen=True)
class Config:
    """Everything a training run needs."""

    channels: list[str] = field(default_factory=lambda: ["mito", "er"])
    scale_factor: float = 40.0
    mask_distances: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    @property
    def dims(self) -> int:
        return len(self.model.output_shape)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **sections: Any) -> Config:
        """A copy with whole sections or top-level values replaced."""
        return dataclasses.replace(self, **sections)


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "training": TrainingConfig}


def _check_type(where: str, value: Any, annotation: str) -> Any:
    """Check ``value`` against the (string) annotation of a config field."""
    optional = annotation.endswith("| None")
    base = annotation.removesuffix("| None").strip()
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where} must not be null")
    if base == "bool":
        ok = isinstance(value, bool)
    elif base == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif base == "str":
        ok = isinstance(value, str)
    elif base in ("list[str]", "list[int]"):
        item = str if base == "list[str]" else int
        ok = isinstance(value, list) and all(
            isinstance(v, item) and not isinstance(v, bool) for v in value
        )
    elif base == "list[list[int]]":
        ok = isinstance(value, list) and all(
            isinstance(row, list) and all(isinstance(v, int) for v in row) for row in value
        )
    else:  # pragma: no cover - a field type this loader does not know
        raise TypeError(f"unsupported config annotation {annotation}")
    if not ok:
        raise ConfigError(f"{where} must be {annotation}, got {value!r}")
    return value


def _build_sample(values: Any, where: str, base: Path | None) -> SampleConfig:
    """A :class:`SampleConfig` with paths made absolute against ``base``."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping, got {values!r}")
    known = {f.name for f in dataclasses.fields(SampleConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; known: {sorted(known)}")
    for key in ("raw", "labels"):
        if key not in values:
            raise ConfigError(f"{where}.{key} is missing")

    def path(key: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}.{key} must be a path, got {value!r}")
        if base is not None and not Path(value).is_absolute():
            return os.path.normpath(base / value)
        return value

    labels = values["labels"]
    if isinstance(labels, dict):
        labels = {str(c): path(f"labels.{c}", p) for c, p in labels.items()}
        if not labels:
            raise ConfigError(f"{where}.labels must name at least one class")
    else:
        labels = path("labels", labels)
    mask = values.get("mask")
    weight = values.get("weight", 1.0)
    if (
        isinstance(weight, bool)
        or not isinstance(weight, (int, float))
        or not (0 < weight < float("inf"))
    ):
        raise ConfigError(f"{where}.weight must be a finite number > 0, got {weight!r}")
    return SampleConfig(
        raw=path("raw", values["raw"]),
        labels=labels,
        mask=None if mask is None else path("mask", mask),
        weight=float(weight),
    )


def _build(cls: type, values: Any, where: str, base: Path | None = None) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        key = f"{where}.{name}" if where != "config" else name
        if name in _SECTIONS and cls is Config:
            kwargs[name] = _build(_SECTIONS[name], value, key, base)
        elif cls is DataConfig and name == "samples" and value is not None:
            if not isinstance(value, list) or not value:
                raise ConfigError(f"{key} must be a non-empty list of samples, got {value!r}")
            kwargs[name] = [_build_sample(v, f"{key}[{i}]", base) for i, v in enumerate(value)]
        elif cls is DataConfig and name == "eval":
            kwargs[name] = None if value is None else _build_sample(value, key, base)
        else:
            kwargs[name] = _check_type(key, value, str(fields[name].type))
    return cls(**kwargs)


def validate(config: Config) -> Config:
    """Check the values that types alone do not; return ``config``."""
    dims = config.dims
    if dims not in (2, 3):
        raise ConfigError(
            f"model.output_shape must have 2 or 3 entries, got {config.model.output_shape}"
        )
    if not config.channels or len(set(config.channels)) != len(config.channels):
        raise ConfigError(f"channels must be non-empty and unique, got {config.channels}")
    if not config.scale_factor > 0:
        raise ConfigError(f"scale_factor must be positive, got {config.scale_factor}")
    for factors in config.model.downsample_factors:
        if len(factors) != dims or any(f < 1 for f in factors):
            raise ConfigError(
                f"model.downsample_factors entries must be {dims} positive ints "
                f"(one per axis of output_shape), got {factors}"
            )
    if any(s < 1 for s in config.model.output_shape):
        raise ConfigError(f"model.output_shape must be positive, got {config.model.output_shape}")
    training = config.training
    for name in ("iterations", "batch_size", "save_every", "snapshot_every", "profile_every"):
        if getattr(training, name) < 1:
            raise ConfigError(f"training.{name} must be >= 1, got {getattr(training, name)}")
    if training.num_workers < 0 or training.cache_size < 1:
        raise ConfigError(
            f"training.num_workers must be >= 0 and training.cache_size >= 1, got "
            f"{training.num_workers} and {training.cache_size}"
        )
    if not training.learning_rate > 0:
        raise ConfigError(f"training.learning_rate must be positive, got {training.learning_rate}")
    if not 0 <= training.final_lr_fraction <= 1:
        raise ConfigError(
            f"training.final_lr_fraction must be in [0, 1], got {training.final_lr_fraction}"
        )
    if training.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"training.device must be auto, cpu or cuda, got {training.device!r}")
    if config.data.class_ids is not None and len(config.data.class_ids) != len(config.channels):
        raise ConfigError(
            f"data.class_ids must hold one id per channel {config.channels}, "
            f"got {config.data.class_ids}"
        )
    _validate_data(config)
    return config


OLD_FORM_KEYS = ("container", "raw", "gt", "mask", "eval_raw", "eval_gt")


def _validate_data(config: Config) -> None:
    data = config.data
    new_keys = [k for k in ("voxel_size", "eval") if getattr(data, k) is not None]
    if not data.new_form:
        if new_keys:
            raise ConfigError(f"data.{new_keys[0]} needs data.samples (the new data form)")
        return
    defaults = DataConfig()
    old = [k for k in OLD_FORM_KEYS if getattr(data, k) != getattr(defaults, k)]
    if old:
        raise ConfigError(
            f"data mixes the old single-container keys {old} with data.samples; use only "
            "voxel_size, samples, eval and class_ids"
        )
    if data.voxel_size is None:
        raise ConfigError("data.voxel_size (the training voxel size) is missing")
    if len(data.voxel_size) != config.dims or any(v < 1 for v in data.voxel_size):
        raise ConfigError(
            f"data.voxel_size must be {config.dims} positive ints (one per axis of "
            f"model.output_shape), got {data.voxel_size}"
        )
    from gp_hotdistance.data import expand_label_template

    named = [(f"data.samples[{i}]", s) for i, s in enumerate(data.samples)]
    if data.eval is not None:
        named.append(("data.eval", data.eval))
    for where, sample in named:
        labels = sample.labels
        if isinstance(labels, str) and "[" in labels:
            try:
                labels = expand_label_template(labels, config.channels)
            except ValueError as error:
                raise ConfigError(f"{where}.labels: {error}") from error
        if isinstance(labels, dict):
            unknown = [c for c in labels if c not in config.channels]
            if unknown:
                raise ConfigError(
                    f"{where}.labels names class(es) {unknown} not in channels {config.channels}"
                )
            if data.class_ids is not None:
                raise ConfigError(
                    f"data.class_ids is only for a single class-id labels dataset, but "
                    f"{where}.labels is per class"
                )


def expand_labels(labels: str | dict[str, str], channels: list[str]) -> dict[str, str] | str:
    """A sample's labels as ``{class: path}`` (a bracket template expanded,
    a mapping as it is), or the path of a class-id dataset."""
    if isinstance(labels, dict):
        return dict(labels)
    if "[" in labels:
        from gp_hotdistance.data import expand_label_template

        return expand_label_template(labels, channels)
    return labels


def from_dict(values: dict[str, Any], base: str | Path | None = None) -> Config:
    """Build and validate a config from a plain mapping; relative data paths
    are taken relative to ``base`` (the config file's directory)."""
    return validate(_build(Config, values, "config", None if base is None else Path(base)))


def load_config(path: str | Path | None) -> Config:
    """Read a JSON (``.json``) or YAML (``.yaml``/``.yml``) config;
    ``None`` gives the defaults."""
    if path is None:
        return validate(Config())
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text)
        elif path.suffix == ".json":
            values = json.loads(text)
        else:
            raise ConfigError(f"config file {path} must end in .json, .yaml or .yml")
    except (json.JSONDecodeError, ValueError) as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"cannot parse config file {path}: {error}") from error
    except Exception as error:  # yaml.YAMLError
        raise ConfigError(f"cannot parse config file {path}: {error}") from error
    return from_dict(values if values is not None else {}, base=path.resolve().parent)
