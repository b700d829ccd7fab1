"""The files a config is read from: the JSON or YAML config file itself
(text to a plain mapping, refusing a repeated key) and the datasplit CSV it
may name (rows to samples). :mod:`pipelines.config` validates what they give."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gp_hotdistance.data.datasplit import read_datasplit

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config file or value that cannot be used."""


def read_config_file(path: Path) -> Any:
    """The values of a JSON (``.json``) or YAML (``.yaml``/``.yml``) config
    file, not yet validated.

    Raises:
        ConfigError: the file is missing, not UTF-8 text, empty, cannot be
            parsed or holds a key twice.
    """
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.suffix not in (".json", ".yaml", ".yml"):
        raise ConfigError(f"config file {path} must end in .json, .yaml or .yml")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path} is not UTF-8 text: {error}") from None
    try:
        if path.suffix == ".json":
            values = (
                json.loads(text, object_pairs_hook=_reject_duplicates) if text.strip() else None
            )
        else:
            values = _parse_yaml(text)
    except ConfigError as error:
        raise ConfigError(f"config file {path}: {error}") from None
    except ValueError as error:  # json.JSONDecodeError, yaml.YAMLError
        raise ConfigError(f"cannot parse config file {path}: {error}") from None
    if values is None:  # an empty file, or YAML with comments only
        raise ConfigError(f"config file {path} is empty; write {{}} for the defaults")
    return values


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ConfigError(f"key(s) {repeated} given more than once")
    return dict(pairs)


def _parse_yaml(text: str) -> Any:
    import yaml

    class Loader(yaml.SafeLoader):
        """A safe loader that refuses a repeated key (PyYAML keeps the last)."""

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[str, Any]:
        loader.flatten_mapping(node)
        pairs = [(loader.construct_object(k), loader.construct_object(v)) for k, v in node.value]
        return _reject_duplicates(pairs)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        return yaml.load(text, Loader=Loader)
    except yaml.YAMLError as error:
        raise ValueError(str(error)) from error


def expand_datasplit(data: dict[str, Any], path: str, channels: list[str]) -> dict[str, Any]:
    """The config's ``data`` section with the rows of its ``datasplit`` CSV
    at ``path`` appended: ``train`` rows to ``samples``, ``validate`` rows
    to ``eval``, each with the crop's classes that are among ``channels`` (the others
    are left out; a row with none is left out, with a warning). The
    expanded section records the rows, not the CSV (``datasplit: null``)."""
    try:
        rows = read_datasplit(path)
    except (FileNotFoundError, ValueError) as error:
        raise ValueError(str(error)) from None
    added: dict[str, list[dict[str, str]]] = {"train": [], "validate": []}
    dropped = 0
    for row in rows:
        classes = [c for c in row.classes if c in channels]
        if not classes:
            dropped += 1
            continue
        labels = re.sub(r"\[[^\[\]]*\]", f"[{','.join(classes)}]", row.labels)
        added[row.usage].append({"raw": row.raw, "labels": labels})
    if dropped:
        logger.warning(
            "datasplit %s: %d of %d rows name none of the channels %s: left out",
            path,
            dropped,
            len(rows),
            channels,
        )
    if not added["train"] and not data.get("samples"):
        raise ValueError(f"datasplit {path} has no train row naming any of the channels {channels}")
    held_out = data.get("eval")
    held_out = [] if held_out is None else [held_out] if isinstance(held_out, Mapping) else held_out
    return {
        **data,
        "samples": [*(data.get("samples") or []), *added["train"]],
        "eval": [*held_out, *added["validate"]],
        "datasplit": None,
    }
