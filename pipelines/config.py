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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config file or value that cannot be used."""


@dataclass(frozen=True)
class DataConfig:
    """Where the datasets are: a zarr ``container`` with funlib.persistence
    metadata (``None``: the generated demo) and dataset names inside it.
    ``gt`` is channels-first binary or a class-id volume (``class_ids``)."""

    container: str | None = None
    raw: str = "raw"
    gt: str = "gt"
    mask: str | None = "mask"
    eval_raw: str | None = "eval/raw"
    eval_gt: str | None = "eval/gt"
    class_ids: list[int] | None = None


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


def _build(cls: type, values: Any, where: str) -> Any:
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
            kwargs[name] = _build(_SECTIONS[name], value, key)
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
    return config


def from_dict(values: dict[str, Any]) -> Config:
    """Build and validate a config from a plain mapping."""
    return validate(_build(Config, values, "config"))


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
    return from_dict(values if values is not None else {})
