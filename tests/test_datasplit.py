"""Datasplit CSVs: both forms read, the challenge's form written, the
config's data.datasplit, and python -m pipelines.datasplit on a
challenge-style collection (tests/collection.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from gp_hotdistance.data import DatasplitRow, read_datasplit, write_datasplit
from pipelines import datasplit as datasplit_cli
from pipelines.config import ConfigError, from_dict, load_config
from tests.collection import DATASETS, class_names, write_collection

CHALLENGE_ROW = (
    '"train","/data/jrc_x/jrc_x.zarr","recon-1/em/fibsem-uint8","/data/jrc_x/jrc_x.zarr",'
    '"recon-1/labels/groundtruth/crop7/[mito,er]"\n'
)


def test_both_forms_are_read_with_paths_relative_to_the_csv(tmp_path):
    (tmp_path / "five.csv").write_text(
        CHALLENGE_ROW
        + '"validate","rel/x.zarr","","rel/x.zarr/recon-1/labels/groundtruth/crop9/[er]",""\n'
    )
    assert read_datasplit(tmp_path / "five.csv") == [
        DatasplitRow(
            "train",
            "/data/jrc_x/jrc_x.zarr/recon-1/em/fibsem-uint8",
            "/data/jrc_x/jrc_x.zarr/recon-1/labels/groundtruth/crop7/[mito,er]",
        ),
        DatasplitRow(
            "validate",
            f"{tmp_path}/rel/x.zarr",
            f"{tmp_path}/rel/x.zarr/recon-1/labels/groundtruth/crop9/[er]",
        ),
    ]
    (tmp_path / "three.csv").write_text(
        "usage,raw,gt\ntrain,a.zarr/raw,a.zarr/crop1/[mito]\n\nvalidate,s3://b/raw,s3://b/c/[er]\n"
    )
    rows = read_datasplit(tmp_path / "three.csv")
    assert rows == [
        DatasplitRow("train", f"{tmp_path}/a.zarr/raw", f"{tmp_path}/a.zarr/crop1/[mito]"),
        DatasplitRow("validate", "s3://b/raw", "s3://b/c/[er]"),
    ]
    assert rows[0].classes == ["mito"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('"train","a","b/[x]"\n"test","a","b/[x]"\n', r"line 2: usage 'test' is not one of"),
        ('"train","a","b","c"\n', r"line 1: 4 columns .* expected 5 .* or 3"),
        ('"train","a","b/mito"\n', r"line 1: label template 'b/mito' needs exactly one"),
    ],
)
def test_malformed_rows_are_named(tmp_path, text, message):
    (tmp_path / "s.csv").write_text(text)
    with pytest.raises(ValueError, match=message):
        read_datasplit(tmp_path / "s.csv")


def test_written_rows_are_the_challenge_form(tmp_path):
    rows = read_datasplit_of(tmp_path, CHALLENGE_ROW)
    write_datasplit(tmp_path / "out.csv", rows)
    assert (tmp_path / "out.csv").read_text() == CHALLENGE_ROW
    assert read_datasplit(tmp_path / "out.csv") == rows


def read_datasplit_of(folder: Path, text: str) -> list[DatasplitRow]:
    (folder / "in.csv").write_text(text)
    return read_datasplit(folder / "in.csv")


def test_config_datasplit_adds_train_samples_and_validate_crops(tmp_path, caplog):
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "s.csv").write_text(
        'train,d.zarr/raw,"d.zarr/crop1/[mito,golgi]"\n'
        "train,d.zarr/raw,d.zarr/crop2/[golgi]\n"
        'validate,d.zarr/raw,"d.zarr/crop3/[er,mito]"\n'
    )
    values = {
        "channels": ["mito", "er"],
        "data": {
            "voxel_size": [8, 8],
            "datasplit": "splits/s.csv",
            "samples": [{"raw": "own/raw", "labels": "own/crop/[er]"}],
        },
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(values))
    with caplog.at_level(logging.WARNING):
        data = load_config(tmp_path / "c.yaml").data
    base = tmp_path / "splits"
    assert [s.raw for s in data.samples] == [f"{tmp_path}/own/raw", f"{base}/d.zarr/raw"]
    assert data.samples[1].label_datasets == {"mito": f"{base}/d.zarr/crop1/mito"}  # golgi: no
    (held_out,) = data.eval
    assert held_out.label_datasets == {
        "er": f"{base}/d.zarr/crop3/er",
        "mito": f"{base}/d.zarr/crop3/mito",
    }
    assert data.datasplit is None  # the rows are in the config now
    assert "1 of 3 rows name none of the channels ['mito', 'er']: left out" in caplog.text
    # the expanded config reads back to itself (config.json of a run)
    assert from_dict(load_config(tmp_path / "c.yaml").to_dict()).data == data
    with pytest.raises(ConfigError, match=r"data: .*datasplit .*missing.csv does not exist"):
        from_dict({"data": {"voxel_size": [8, 8], "datasplit": str(tmp_path / "missing.csv")}})


@pytest.fixture(scope="module")
def small_collection(tmp_path_factory):
    return write_collection(tmp_path_factory.mktemp("small"), crops=12, classes=6, seed=3)


def run_cli(*args: str) -> int:
    return datasplit_cli.main([str(a) for a in args])


def test_datasplit_command_on_a_collection(small_collection, tmp_path, capsys):
    root = small_collection.root
    wanted = ["class00", "class01"]
    out = tmp_path / "split.csv"
    common = ["--voxel-size", 8, 8, 8, "--validation-fraction", 0.25, "--seed", 5]
    assert run_cli(root, "--classes", *wanted, *common, "--out", out) == 0
    printed = capsys.readouterr().out
    rows = read_datasplit(out)
    # each crop with one of the classes, with just those it has
    expected = {
        key: [c for c in wanted if c in classes]
        for key, classes in small_collection.crops.items()
        if set(classes) & set(wanted)
    }
    found = {row.labels.split("/groundtruth/")[1].split("/")[0]: row.classes for row in rows}
    assert found == {key.split("/")[1]: classes for key, classes in expected.items()}
    assert len(rows) == len(expected) and len(expected) >= 2
    usages = [row.usage for row in rows]
    assert usages.count("validate") == max(1, round(0.25 * len(rows)))
    left_out = len(small_collection.crops) - len(expected)
    assert f"left out: {left_out} crops with none of the classes, 0 datasets" in printed
    assert f"wrote {out}: {len(rows)} crops" in printed
    for dataset, (voxel_size, _) in DATASETS.items():
        assert any(
            line.startswith(dataset) and str(voxel_size) in line for line in printed.splitlines()
        )
    row = rows[0]
    dataset = row.raw.split("/")[-5]
    assert row.raw == f"{root}/{dataset}/{dataset}.zarr/recon-1/em/fibsem-uint8"
    # deterministic for a seed; an existing file is kept unless --force
    first = out.read_text()
    assert run_cli(root, "--classes", *wanted, *common, "--out", out) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert run_cli(root, "--classes", *wanted, *common, "--out", out, "--force") == 0
    assert out.read_text() == first
    # globs choose datasets and crops
    out2 = tmp_path / "iso8.csv"
    assert (
        run_cli(
            root, "--classes", *class_names(6), *common, "--datasets", "jrc_iso8", "--out", out2
        )
        == 0
    )
    assert {r.raw.split("/")[-5] for r in read_datasplit(out2)} == {"jrc_iso8"}


@pytest.mark.slow
def test_a_collection_of_200_crops_splits_previews_and_trains(tmp_path, capsys):
    """The challenge-style collection (3 datasets at three voxel sizes, one
    anisotropic; 200 crops; 20 classes): the datasplit command, then a
    preview and two training iterations at 8 nm from its CSV."""
    from pipelines import preview as preview_module
    from pipelines import train as train_module

    collection = write_collection(tmp_path / "data", crops=200, classes=20)
    split = tmp_path / "split.csv"
    classes = collection.classes
    assert (
        run_cli(
            collection.root,
            *("--classes", *classes, "--voxel-size", 8, 8, 8, "--validation-fraction", 0.02),
            *("--out", split),
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "wrote" in printed and "200 crops (196 train, 4 validate)" in printed
    config = from_dict(
        {
            "channels": classes,
            "scale_factor": 32.0,
            "data": {"voxel_size": [8, 8, 8], "datasplit": str(split)},
            "model": {
                "num_fmaps": 2,
                "downsample_factors": [[2, 2, 2]],
                "output_shape": [8, 8, 8],
            },
            "training": {"iterations": 2, "save_every": 2, "snapshot_every": 9, "num_workers": 0},
        }
    )
    assert len(config.data.samples) == 196 and len(config.data.eval) == 4
    written = preview_module.preview(config, tmp_path / "preview", batches=1)
    assert (tmp_path / "preview" / "batch_0.png") in written
    summary = train_module.train(config, tmp_path / "run")
    assert summary["iterations"] == 2 and summary["evaluation_crops"] == 4
    printed = capsys.readouterr().out
    for dataset in DATASETS:
        assert f"{dataset}.zarr/recon-1/em/fibsem-uint8/s0 (" in printed, dataset
    assert "raw at (16, 8, 8) upsampled x(2, 1, 1) (linear)" in printed
    assert "raw at (16, 16, 16) upsampled x(2, 2, 2) (linear)" in printed
