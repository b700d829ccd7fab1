"""The config schema: defaults, the data section, paths, and each error."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pipelines import common
from pipelines.config import (
    MAX_OUTPUT_SIDE,
    MAX_OUTPUT_VOXELS,
    Config,
    ConfigError,
    SamplesDataConfig,
    expand_labels,
    from_dict,
    load_config,
)

CONFIGS = Path(__file__).parent.parent / "configs"


def samples_data(**changes):
    """A valid samples-form data section for a 2-D config, with ``changes``."""
    data = {"voxel_size": [8, 8], "samples": [{"raw": "c.zarr/raw", "labels": "c.zarr/[mito,er]"}]}
    data.update(changes)
    return data


# -- defaults and round trips --------------------------------------------------


def test_defaults_are_the_demo():
    config = load_config(None)
    assert config == Config()
    assert config.channels == ["mito", "er"] and config.scale_factor == 40.0
    assert config.dims == 2
    assert config.data is None  # the demo, generated into the run directory
    assert (config.training.iterations, config.training.seed) == (4000, 0)


@pytest.mark.parametrize("name", ["demo_2d.yaml", "anisotropic_3d.yaml", "samples_3d.yaml"])
def test_to_dict_round_trips_through_json(name):
    config = load_config(CONFIGS / name)
    values = json.loads(json.dumps(config.to_dict()))
    assert from_dict(values) == config


def test_samples_example_config():
    from gp_hotdistance.torch.inference import context_for

    config = load_config(CONFIGS / "samples_3d.yaml")
    assert isinstance(config.data, SamplesDataConfig)
    assert config.data.voxel_size == [8, 8, 8] and config.dims == 3
    first, second = config.data.samples
    base = str(CONFIGS.absolute())
    assert first.raw == f"{base}/jrc_hela-2.zarr/recon-1/em/fibsem-uint8"
    crop7 = f"{base}/jrc_hela-2.zarr/recon-1/labels/groundtruth/crop7"
    assert first.label_datasets == {"mito": f"{crop7}/mito", "er": f"{crop7}/er"}
    assert (first.weight, second.weight) == (1.0, 0.5)
    crop9 = f"{base}/jrc_hela-2.zarr/recon-1/labels/groundtruth/crop9"
    assert second.label_datasets == {"mito": f"{crop9}/mito"}
    model = common.make_model(config, common.make_predictor(config))
    assert context_for(model, config.model.output_shape) == (20, 20, 20)


def test_replace_validates():
    config = Config()
    assert config.replace(scale_factor=12).scale_factor == 12.0
    smaller = config.replace(training=dataclasses.replace(config.training, batch_size=3))
    assert smaller.training.batch_size == 3 and config.training.batch_size == 1
    with pytest.raises(ConfigError, match=r"scale_factor: Input should be greater than 0, got 0"):
        config.replace(scale_factor=0)
    with pytest.raises(ConfigError, match=r"data.class_ids must hold one unique id per channel"):
        config.replace(channels=["a", "b", "c"], data=samples_data(class_ids=[1, 2]))


# -- errors: each names the key path and the value ------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"scale_factor": float("inf")}, r"scale_factor: Input should be a finite number, got inf"),
        ({"scale_factor": float("nan")}, r"scale_factor: Input should be a finite number, got nan"),
        ({"scale_factor": True}, r"scale_factor: Input should be a valid number, got True"),
        (
            {"data": samples_data(samples=[{"raw": "r", "labels": "ids"}], class_ids=[3, 3])},
            r"data.class_ids must hold one unique id per channel \['mito', 'er'\], got \[3, 3\]",
        ),
        ({"data": {"class_ids": [1, -2]}}, r"data.class_ids\[1\]: .* greater than or equal to 0"),
        ({"channels": []}, r"channels: List should have at least 1 item"),
        ({"channels": ["a", "a"]}, r"channels must be unique, got \['a', 'a'\]"),
        ({"channels": ["a", ""]}, r"channels\[1\]: String should have at least 1 character"),
        ({"model": {"num_fmaps": 0}}, r"model.num_fmaps: .* greater than or equal to 1, got 0"),
        ({"model": {"num_convs": 0}}, r"model.num_convs: .* greater than or equal to 1, got 0"),
        (
            {"model": {"head_kernel_size": 0}},
            r"model.head_kernel_size: .* greater than or equal to 1, got 0",
        ),
        ({"model": {"head_kernel_size": 2}}, r"model.head_kernel_size: must be odd, got 2"),
        (
            {"model": {"downsample_factors": [[2, 0], [2, 2]]}},
            r"model.downsample_factors\[0\]\[1\]: .* greater than or equal to 1, got 0",
        ),
        ({"model": {"downsample_factors": []}}, r"model.downsample_factors: List should have at"),
        (
            {"model": {"output_shape": [8, 8, 8, 8]}},
            r"model.output_shape: List should have at most 3 items",
        ),
        (
            {"model": {"output_shape": [MAX_OUTPUT_SIDE + 1, 8]}},
            rf"model.output_shape: \[{MAX_OUTPUT_SIDE + 1}, 8\] is too large",
        ),
        (
            # 4096 per side is allowed, but not 4096**2 * 2 voxels in total
            {
                "model": {
                    "output_shape": [2, MAX_OUTPUT_SIDE, MAX_OUTPUT_SIDE],
                    "downsample_factors": [[1, 2, 2]],
                }
            },
            rf"is too large: at most {MAX_OUTPUT_SIDE} voxels per side and {MAX_OUTPUT_VOXELS}",
        ),
        (
            {"model": {"output_shape": [8, 8, 8]}},  # default downsample_factors are 2-D
            r"model.downsample_factors entries must be 3 positive ints .* got \[2, 2\]",
        ),
        ({"training": {"iterations": 0}}, r"training.iterations: .* or equal to 1, got 0"),
        ({"training": {"save_every": 0}}, r"training.save_every: .* or equal to 1, got 0"),
        ({"training": {"snapshot_every": 0}}, r"training.snapshot_every: .* or equal to 1, got 0"),
        ({"training": {"batch_size": 0}}, r"training.batch_size: .* or equal to 1, got 0"),
        ({"training": {"batch_size": 2.0}}, r"training.batch_size: .* valid integer, got 2.0"),
        ({"training": {"iterations": True}}, r"training.iterations: .* valid integer, got True"),
        ({"training": {"learning_rate": 0.0}}, r"training.learning_rate: .* than 0, got 0.0"),
        (
            {"training": {"learning_rate": float("inf")}},
            r"training.learning_rate: Input should be a finite number, got inf",
        ),
        ({"training": {"num_workers": -1}}, r"training.num_workers: .* equal to 0, got -1"),
        ({"training": {"seed": -1}}, r"training.seed: .* equal to 0, got -1"),
        ({"training": {"seed": 2**32}}, r"training.seed: .* less than 4294967296"),
        ({"training": {"device": "gpu"}}, r"training.device: .* got 'gpu'"),
        ({"training": {"augment": 1}}, r"training.augment: .* valid boolean, got 1"),
        ({"model": {"fmap_inc_factor": "2"}}, r"model.fmap_inc_factor: .* integer, got '2'"),
        ({"training": {"iteration": 5}}, r"training.iteration: unknown key; known: \['iterations'"),
        ("not a mapping", r"config must be a mapping of sections, got 'not a mapping'"),
        ({"chanels": ["a"]}, r"chanels: unknown key; known: \['channels', "),
        ({"training": {"iterations": "10"}}, r"training.iterations: .* valid integer, got '10'"),
        ({"scale_factor": -1.0}, r"scale_factor: Input should be greater than 0, got -1.0"),
        ({"model": {"output_shape": [8]}}, r"model.output_shape: List should have at least 2"),
        (
            {"model": {"output_shape": [8, 8], "downsample_factors": [[2, 2, 2]]}},
            r"downsample_factors entries must be 2 positive ints",
        ),
        ({"data": []}, r"data: Input should be a dictionary .*, got \[\]"),
        ({"mask_distances": "yes"}, r"mask_distances: Input should be a valid boolean, got 'yes'"),
    ],
)
def test_errors_name_key_and_value(values, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(values)


def test_every_error_is_listed():
    with pytest.raises(ConfigError) as error:
        from_dict({"scale_factor": -1.0, "training": {"batch_size": 0, "device": "tpu"}})
    text = str(error.value)
    assert text.startswith("config has 3 errors:")
    for part in ("scale_factor: ", "training.batch_size: ", "training.device: "):
        assert part in text


# -- the samples form of data -------------------------------------------------


def test_samples_form_paths_are_relative_to_the_config_file(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    values = {
        "data": {
            "voxel_size": [8, 8],
            "samples": [
                {"raw": "../d.zarr/raw", "labels": "d.zarr/crop/[er,mito]", "mask": "m"},
                {"raw": "/abs/raw", "labels": {"er": "s3://bucket/er"}, "weight": 2.5},
            ],
            "eval": {"raw": "e.zarr/raw", "labels": "e.zarr/ids"},
        }
    }
    (folder / "c.json").write_text(json.dumps(values))
    monkeypatch.chdir(tmp_path)  # the working directory plays no part
    data = load_config("configs/c.json").data
    base = folder.absolute()
    first, second = data.samples
    assert first.raw == f"{base}/../d.zarr/raw" and first.mask == f"{base}/m"
    assert first.label_datasets == {
        "er": f"{base}/d.zarr/crop/er",
        "mito": f"{base}/d.zarr/crop/mito",
    }
    assert (first.weight, second.weight) == (1.0, 2.5)
    assert second.raw == "/abs/raw" and second.label_datasets == {"er": "s3://bucket/er"}
    (held_out,) = data.eval  # one mapping is a list of one
    assert held_out.labels == f"{base}/e.zarr/ids" and held_out.label_datasets is None
    # from_dict without a base directory keeps relative paths as they are
    assert from_dict(values).data.samples[0].raw == "../d.zarr/raw"


@pytest.mark.parametrize(
    "data, keys",
    [
        ({"container": "demo.zarr"}, "['container']"),
        ({"container": "c.zarr", "raw": "raw", "gt": "gt"}, "['container', 'gt', 'raw']"),
        ({"raw": "raw", "eval_gt": "eval/gt"}, "['eval_gt', 'raw']"),
    ],
)
def test_single_container_form_is_refused(tmp_path, data, keys):
    (tmp_path / "c.json").write_text(json.dumps({"data": data}))
    with pytest.raises(ConfigError) as excinfo:
        load_config(tmp_path / "c.json")
    message = str(excinfo.value)
    assert f"data: the keys {keys} belong to the single-container form" in message
    assert "    samples:\n      - raw: data.zarr/raw" in message  # the form to write instead


def test_class_id_labels_take_class_ids():
    data = samples_data(samples=[{"raw": "r", "labels": "ids"}], class_ids=[7, 9])
    config = from_dict({"data": data})
    assert config.data.class_ids == [7, 9] and config.data.samples[0].label_datasets is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            samples_data(
                samples=[
                    {"raw": "r", "labels": "x/[mito,er]"},
                    {"raw": "r", "labels": {"er": "a", "golgi": "b"}},
                ]
            ),
            r"data.samples\[1\].labels names class\(es\) \['golgi'\] that are not in channels",
        ),
        (
            samples_data(samples=[{"raw": "r", "labels": "crop/[mito,nucleus]"}]),
            r"data.samples\[0\].labels names class\(es\) \['nucleus'\]",
        ),
        (
            samples_data(eval={"raw": "r", "labels": {"golgi": "g"}}),
            r"data.eval\[0\].labels names class\(es\) \['golgi'\]",
        ),
        (
            samples_data(samples=[{"raw": "r", "labels": "crop/[mito,er"}]),
            r"data.samples\[0\].labels: label template 'crop/\[mito,er' needs exactly one",
        ),
        (samples_data(samples=[]), r"data.samples: List should have at least 1 item"),
        ({"voxel_size": [8, 8]}, r"data.samples: .*required"),
        (samples_data(voxel_size=[8, 8, 8]), r"data.voxel_size \[8, 8, 8\] must have 2 entries"),
        (samples_data(voxel_size=[8, 0]), r"data.voxel_size\[1\]: .* equal to 1, got 0"),
        (samples_data(voxel_size=[8.5, 8]), r"data.voxel_size\[0\]: .* integer, got 8.5"),
        (
            samples_data(class_ids=[1, 2]),
            r"data.class_ids applies to class-id labels .* but data.samples\[0\].labels names",
        ),
        (
            samples_data(samples=[{"raw": "r", "labels": "l", "weight": 0}]),
            r"data.samples\[0\].weight: .* greater than 0, got 0",
        ),
        (
            samples_data(samples=[{"raw": "r", "labels": "l", "weight": float("inf")}]),
            r"data.samples\[0\].weight: Input should be a finite number, got inf",
        ),
        (
            samples_data(samples=[{"raw": "r", "labels": "l", "wieght": 2}]),
            r"data.samples\[0\].wieght: unknown key; known: \['raw', 'labels', 'mask', 'weight'\]",
        ),
        (
            samples_data(eval={"raw": "r", "labels": "l", "weight": 2.0}),
            r"data.eval\[0\].weight: unknown key; known: \['raw', 'labels', 'mask'\]",
        ),
        (samples_data(samples=[{"raw": "r", "labels": {"er": 3}}]), r"labels.er: .* string, got 3"),
        (
            {**samples_data(), "container": "c.zarr", "raw": "raw"},
            r"data: the keys \['container', 'raw'\] belong to the single-container form",
        ),
    ],
)
def test_samples_form_errors(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict({"data": data})


def test_expand_labels():
    assert expand_labels("a/crop7/[mito,er]") == {"mito": "a/crop7/mito", "er": "a/crop7/er"}
    assert expand_labels("g/[mito, er ]/s0") == {"mito": "g/mito/s0", "er": "g/er/s0"}
    assert expand_labels("[nuc]") == {"nuc": "nuc"}
    for bad in ("a/mito", "a/[mito]/[er]", "a/[]", "a/[ , ]", "a/[mito", "a/mito]"):
        with pytest.raises(ValueError, match="label template"):
            expand_labels(bad)


# -- files ---------------------------------------------------------------------


def test_config_file_errors(tmp_path):
    cases = {
        "binary.yaml": (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", r"binary.yaml is not UTF-8 text"),
        "empty.yaml": (b"", r"empty.yaml is empty; write \{\} for the defaults"),
        "comments.yml": (b"# nothing here\n", r"comments.yml is empty"),
        "empty.json": (b"  \n", r"empty.json is empty"),
        "list.yaml": (b"- mito\n- er\n", r"list.yaml must be a mapping of sections, got \['mito'"),
        "twice.yaml": (
            b"channels: [a]\ntraining:\n  iterations: 5\n  iterations: 6\n",
            r"twice.yaml: key\(s\) \['iterations'\] given more than once",
        ),
        "twice.json": (
            b'{"scale_factor": 1, "scale_factor": 2}',
            r"twice.json: key\(s\) \['scale_factor'\] given more than once",
        ),
        "bad.yaml": (b"channels: [a\n", r"cannot parse config file .*bad.yaml"),
        "bad.json": (b"{not json", r"cannot parse config file .*bad.json"),
        "huge.json": (b'{"scale_factor": 1e400}', r"huge.json: scale_factor: .* finite number"),
        "inf.json": (b'{"scale_factor": Infinity}', r"inf.json: scale_factor: .* finite number"),
        "inf.yaml": (b"scale_factor: .inf\n", r"inf.yaml: scale_factor: .* finite number"),
        "c.toml": (b"", r"c.toml must end in .json, .yaml or .yml"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ConfigError, match=message):
            load_config(tmp_path / name)
    with pytest.raises(ConfigError, match=r"missing.yaml does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_empty_mapping_file_gives_the_defaults(tmp_path):
    (tmp_path / "c.yaml").write_text("{}\n")
    assert load_config(tmp_path / "c.yaml") == Config()


def test_2d_config_with_3d_voxel_size_names_both(tmp_path):
    (tmp_path / "c.yaml").write_text(
        "data:\n  voxel_size: [40, 4, 4]\n  samples: [{raw: r, labels: 'l/[mito]'}]\n"
    )
    with pytest.raises(
        ConfigError,
        match=r"data.voxel_size \[40, 4, 4\] must have 2 entries, one per axis of "
        r"model.output_shape \[64, 64\]",
    ):
        load_config(tmp_path / "c.yaml")
