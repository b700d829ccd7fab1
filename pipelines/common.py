"""The layer the scripts share: predictor, model, device, a checkpoint's model and
the samples of a config (raw normalisation is the data layer's
:func:`gp_hotdistance.data.normalize_raw`).

``train``, ``preview``, ``view`` and ``blockwise`` import from here and never
from each other.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from gp_hotdistance.predictor import HotDistancePredictor
from pipelines.checkpoints import checksum_error
from pipelines.config import Config, ConfigError

if TYPE_CHECKING:
    import torch

    from gp_hotdistance.data import Sample
    from pipelines.config import SampleConfig


def make_predictor(config: Config, class_ids: list[int] | None = None) -> HotDistancePredictor:
    """The predictor a config describes; ``class_ids`` (default
    ``data.class_ids``) map class-id labels to the channels."""
    if class_ids is None and config.data is not None:
        class_ids = config.data.class_ids
    return HotDistancePredictor(
        channels=config.channels,
        scale_factor=config.scale_factor,
        mask_distances=config.mask_distances,
        kernel_size=config.model.head_kernel_size,
        class_ids=class_ids,
    )


def make_model(config: Config, predictor: HotDistancePredictor) -> torch.nn.Module:
    """UNet backbone plus the predictor's head."""
    from gp_hotdistance.torch import UNet

    backbone = UNet(
        in_channels=1,
        num_fmaps=config.model.num_fmaps,
        fmap_inc_factor=config.model.fmap_inc_factor,
        downsample_factors=[tuple(f) for f in config.model.downsample_factors],
        num_convs=config.model.num_convs,
    )
    return predictor.create_model(backbone)


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when a CUDA device is available, else ``cpu``;
    ``cuda`` without a device is a :class:`ConfigError`."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device is {name!r}, but no CUDA device is available")
    return name


def data_error(error: BaseException) -> str | None:
    """The message of a :class:`gp_hotdistance.data.DataValueError` behind
    ``error``, however the data pipeline wrapped it (gunpowder keeps only the
    text of an exception raised in a node or a ``PreCache`` worker; a torch
    ``DataLoader`` re-raises a worker's error with its traceback as text), or
    ``None`` when there is none."""
    from gp_hotdistance.data import DataValueError

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DataValueError):
            return str(current)
        texts = [str(current), *(getattr(current, "original_traceback", None) or [])]
        for text in texts:
            match = re.search(r"DataValueError: (.*)", text)
            if match:
                return match.group(1)
        current = current.__cause__ or current.__context__
    return None


def load_model(config: Config, checkpoint: str | Path) -> torch.nn.Module:
    """The config's model with the weights of ``checkpoint`` (a file holding
    ``{"model_state_dict": ...}``, as :meth:`pipelines.rundir.RunDirectory.save`
    and gunpowder's ``Train`` write), in eval mode. Loaded with
    ``weights_only=True``: a checkpoint holding pickled objects is refused;
    a checksum saved in it is verified.

    Raises:
        ConfigError: the file cannot be loaded, does not match its checksum,
            or its weights do not fit the config's model.
    """
    import pickle

    import torch

    model = make_model(config, make_predictor(config))
    try:
        state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        raise ConfigError(f"cannot load checkpoint {checkpoint}: {error}") from error
    if not isinstance(state, dict) or "model_state_dict" not in state:
        raise ConfigError(f"checkpoint {checkpoint} holds no model_state_dict")
    mismatch = checksum_error(state)
    if mismatch:
        raise ConfigError(f"checkpoint {checkpoint}: {mismatch}")
    try:
        model.load_state_dict(state["model_state_dict"])
    except RuntimeError as error:  # missing, unexpected or differently shaped weights
        raise ConfigError(
            f"checkpoint {checkpoint} does not fit the model of this config: {error}"
        ) from None
    return model.eval()


def open_sample(
    config: Config,
    sample: SampleConfig,
    where: str,
    voxel_size: list[int] | None = None,
    volumes: dict | None = None,
) -> Sample:
    """The data layer's :class:`~gp_hotdistance.data.Sample` for one sample
    of ``config``, read at ``voxel_size`` (default ``config.data.voxel_size``);
    its errors become :class:`ConfigError` s naming ``where`` (e.g.
    ``data.samples[1]``). ``volumes`` (raw path -> opened volume) shares
    one opened raw volume between the samples of its crops."""
    from gp_hotdistance.data import Sample, open_volume

    labels = sample.label_datasets
    size = config.data.voxel_size if voxel_size is None else voxel_size
    try:
        raw = sample.raw
        if volumes is not None:
            if raw not in volumes:
                volumes[raw] = open_volume(raw, size)
            raw = volumes[raw]
        return Sample(
            raw,
            sample.labels if labels is None else labels,
            config.channels,
            size,
            class_ids=config.data.class_ids if labels is None else None,
            mask=sample.mask,
            upsample=config.data.upsample,
        )
    except (ValueError, FileNotFoundError) as error:
        raise ConfigError(f"{where}: {error}") from error
