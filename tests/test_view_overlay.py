"""pipelines.view with several paths: raw, predictions, instances and a submission overlaid."""

import json
import os

import numpy as np
import zarr

from gp_hotdistance.data import write_volume
from pipelines import view


def _funlib(root, name, data, voxel_size, offset, **attrs):
    array = zarr.open_group(str(root), mode="a").create_dataset(name, data=data, overwrite=True)
    array.attrs.update({"voxel_size": list(voxel_size), **attrs})
    if offset is not None:
        array.attrs["offset"] = list(offset)
    return array


def test_several_paths_are_overlaid(tmp_path, capsys):
    rng = np.random.default_rng(1)
    _funlib(tmp_path / "data.zarr", "raw", rng.random((16, 16), np.float32), (8, 8), (0, 0))
    names = ["hot_mito", "hot_er", "dist_mito", "dist_er"]
    for run, written in (("old", 1_000_000), ("new", 2_000_000)):
        prediction = _funlib(
            tmp_path / f"{run}.zarr", "prediction", rng.uniform(-1, 1, (4, 8, 8)).astype(np.float32),
            (8, 8), (32, 32), channel_names=names,
        )  # fmt: skip
        path = os.path.join(prediction.store.path, prediction.path)
        os.utime(path, (written, written))
    ids = np.zeros((8, 8), np.uint64)
    ids[2:4, 2:4] = 2**40
    write_volume(str(tmp_path / "seg.zarr"), "mito", ids, (8, 8), (32, 32))
    write_volume(str(tmp_path / "seg.zarr"), "er", np.ones((8, 8), np.uint8), (8, 8), (32, 32))
    # the challenge's layout: float voxel size and a translation attribute
    _funlib(tmp_path / "sub.zarr", "crop3/mito", ids, (8.0, 8.0), None, translation=[32.0, 40.0])
    paths = [tmp_path / n for n in ("data.zarr", "old.zarr", "new.zarr", "seg.zarr", "sub.zarr")]
    assert view.main([*map(str, paths), "--state-only"]) == 0
    layers = {layer["name"]: layer for layer in json.loads(capsys.readouterr().out)["layers"]}
    assert set(layers) == {
        "data/raw",
        *(f"{run}/prediction/{n}" for run in ("old", "new") for n in names),
        "seg/mito",
        "seg/er",
        "sub/crop3/mito",
    }
    assert layers["seg/mito"]["type"] == "segmentation"  # uint64 instance ids
    assert layers["sub/crop3/mito"]["type"] == "segmentation"
    assert layers["seg/er"]["type"] == "image"  # a 0/1 mask
    visible = {name for name, layer in layers.items() if layer.get("visible", True)}
    # raw, the newest prediction's first distance, and the instances
    assert visible == {"data/raw", "new/prediction/dist_mito", "seg/mito", "sub/crop3/mito"}
    matrix = np.array(layers["sub/crop3/mito"]["source"][0]["transform"]["matrix"])
    np.testing.assert_array_equal(matrix[:, 2], [4, 5])  # translation (32, 40) / 8
