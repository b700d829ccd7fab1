"""pipelines.view: finding datasets, layer state, and a headless-Chromium screenshot."""

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import gunpowder as gp
import neuroglancer
import numpy as np
import pytest
import zarr

from pipelines import view, view_layers
from tests.helpers import ArraySource, make_array

VOXEL_3D = (40, 4, 4)
RAW_OFFSET = (80, -8, 12)  # world units, a multiple of VOXEL_3D
GT_TRANSLATION = (120, 8, 16)
SCREENSHOT_SIZE = [320, 320]


def write_funlib(path: Path, data: np.ndarray, voxel_size, offset, axis_names, **extra) -> None:
    array = zarr.open_array(str(path), mode="w", shape=data.shape, dtype=data.dtype)
    array[...] = data
    array.attrs.update(
        voxel_size=list(voxel_size),
        offset=list(offset),
        axis_names=list(axis_names),
        units=["nm"] * len(voxel_size),
        **extra,
    )


def write_ome(path: Path, data: np.ndarray, scale, translation, channel_names) -> None:
    """An OME-NGFF 0.4 single-level group with a leading channel axis."""
    group = zarr.open_group(str(path), mode="w")
    axes = [{"name": "c^", "type": "channel"}] + [
        {"name": name, "type": "space", "unit": "nanometer"} for name in ("z", "y", "x")
    ]
    transforms = [
        {"type": "scale", "scale": [1.0, *scale]},
        {"type": "translation", "translation": [0.0, *translation]},
    ]
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": axes,
            "datasets": [{"path": "s0", "coordinateTransformations": transforms}],
        }
    ]
    s0 = group.create_dataset("s0", data=data)
    s0.attrs.update(channel_names=list(channel_names))


@pytest.fixture
def container(tmp_path):
    """3-D, anisotropic voxels, non-zero offsets, both dataset forms, one unviewable array."""
    rng = np.random.default_rng(0)
    root = tmp_path / "run.zarr"
    zarr.open_group(str(root), mode="w")
    raw = rng.random((4, 24, 20), dtype=np.float32)
    write_funlib(root / "raw", raw, VOXEL_3D, RAW_OFFSET, ["z", "y", "x"])
    gt = (rng.random((2, 2, 8, 6)) > 0.5).astype(np.uint8)
    write_ome(root / "gt", gt, VOXEL_3D, GT_TRANSLATION, ["mito", "er"])
    target = rng.uniform(-1, 1, (4, 2, 8, 6)).astype(np.float32)
    write_funlib(root / "target", target, VOXEL_3D, GT_TRANSLATION, ["c^", "z", "y", "x"])
    zarr.open_array(str(root / "done"), mode="w", shape=(3,), dtype=np.uint8)
    return root, {"raw": raw, "gt": gt, "target": target}


def state_only(capsys, *args) -> dict:
    assert view.main([*map(str, args), "--state-only"]) == 0
    return json.loads(capsys.readouterr().out)


def test_state_only_layers_geometry_and_data(container, capsys):
    root, data = container
    state = state_only(capsys, root)
    layers = {layer["name"]: layer for layer in state["layers"]}
    assert list(layers) == [
        "gt/mito",
        "gt/er",
        "raw",
        "target/hot_0",  # unnamed channels: [hot x C, distance x C]
        "target/hot_1",
        "target/dist_0",
        "target/dist_1",
    ]
    assert {name: layer["type"] for name, layer in layers.items()} == {
        "gt/mito": "segmentation",
        "gt/er": "segmentation",
        "raw": "image",
        "target/hot_0": "image",
        "target/hot_1": "image",
        "target/dist_0": "image",
        "target/dist_1": "image",
    }
    visible = [name for name, layer in layers.items() if layer.get("visible", True)]
    assert visible == ["gt/mito", "gt/er", "raw", "target/dist_0"]
    for name, layer in layers.items():
        transform = layer["source"][0]["transform"]
        scales = {axis: value for axis, (value, _) in transform["outputDimensions"].items()}
        units = {unit for _, unit in transform["outputDimensions"].values()}
        assert scales == pytest.approx({"z": 40e-9, "y": 4e-9, "x": 4e-9}), name
        assert units == {"m"}, name
        matrix = np.array(transform["matrix"])
        np.testing.assert_array_equal(matrix[:, :3], np.eye(3))
        # translation is in voxels of the output space: world offset / voxel size
        offset = RAW_OFFSET if name == "raw" else GT_TRANSLATION
        np.testing.assert_array_equal(matrix[:, 3] * VOXEL_3D, offset, err_msg=name)
    assert "vec3(0.0, 0.0, 1.0)" in layers["target/dist_0"]["shader"]  # diverging
    assert "range=[-1.0, 1.0]" in layers["target/dist_0"]["shader"]
    assert "range=[0.0, 1.0]" in layers["target/hot_0"]["shader"]
    assert state["displayDimensions"] == ["x", "y", "z"]
    assert state["dimensions"] == {"z": [40e-9, "m"], "y": [4e-9, "m"], "x": [4e-9, "m"]}
    # centred on raw: offset + shape * voxel / 2, in voxels
    centre = (np.array(RAW_OFFSET) + np.array([4, 24, 20]) * VOXEL_3D / 2) / VOXEL_3D
    np.testing.assert_allclose(state["position"], centre)
    # raw's larger in-plane side, 24 voxels of 4 nm, spans FIT_PIXELS
    assert state["crossSectionScale"] == pytest.approx(24 / view.FIT_PIXELS)


def test_unviewable_arrays_are_skipped_with_a_note(container, capsys):
    root, _ = container
    assert view.main([str(root), "--state-only"]) == 0
    captured = capsys.readouterr()
    assert f"note: skipping {root / 'done'}: no voxel_size attribute" in captured.err
    assert "done" not in [layer["name"] for layer in json.loads(captured.out)["layers"]]


def test_channels_are_served_lazily_and_exactly(container):
    root, data = container
    volumes = {v.name: v for v in view_layers.find_volumes(root)}
    np.testing.assert_array_equal(volumes["target/dist_1"].data[:, :, :], data["target"][3])
    np.testing.assert_array_equal(volumes["gt/er"].data[:, 2:5, :], data["gt"][1, :, 2:5])
    np.testing.assert_array_equal(volumes["raw"].data[1:3, :, :], data["raw"][1:3])
    viewer = view.make_viewer(list(volumes.values()))
    url = viewer.state.layers["gt/mito"].source[0].url
    (source,) = [v for v in viewer.volume_manager.volumes.values() if url.endswith(v.token)]
    assert source.volume_type == "segmentation"
    np.testing.assert_array_equal(source.data[:, :, :], data["gt"][0])


def write_preview(tmp_path: Path, batches: int) -> Path:
    """A preview directory as pipelines.preview writes it (2-D, one dataset per channel)."""
    out = tmp_path / "preview"
    for index in range(batches):
        group = out / "preview.zarr" / f"batch_{index}"
        raw = np.full((12, 10), index, dtype=np.float32)
        write_funlib(group / "raw", raw, (8, 8), (0, 0), ["y", "x"])
        for channel in ("mito", "er"):
            gt = np.zeros((4, 4), dtype=np.uint8)
            write_funlib(group / "gt" / channel, gt, (8, 8), (32, 24), ["y", "x"])
            dist = np.zeros((4, 4), dtype=np.float32)
            write_funlib(group / "target" / f"dist_{channel}", dist, (8, 8), (32, 24), ["y", "x"])
    return out


def test_preview_directory_newest_batch_or_chosen(tmp_path, capsys):
    out = write_preview(tmp_path, batches=3)
    state = state_only(capsys, out)
    assert state["layout"] == "xy"
    names = [layer["name"] for layer in state["layers"]]
    assert names == ["gt/er", "gt/mito", "raw", "target/dist_er", "target/dist_mito"]
    assert view.main([str(out), "--state-only"]) == 0
    assert "showing batch_2 of" in capsys.readouterr().err
    volumes = {v.name: v for v in view_layers.find_volumes(out, batch=1)}
    assert volumes["raw"].data[0, 0] == 1  # batch_1's raw holds ones
    # a group inside the container: the same layers
    inside = {v.name: v for v in view_layers.find_volumes(out / "preview.zarr" / "batch_1")}
    assert list(inside) == list(volumes)
    assert inside["raw"].data[0, 0] == 1
    (only_raw,) = view_layers.find_volumes(out / "preview.zarr" / "batch_0" / "raw")
    assert (only_raw.name, only_raw.data[0, 0]) == ("raw", 0)
    assert volumes["target/dist_er"].offset == (32.0, 24.0)
    assert volumes["target/dist_er"].voxel_size == (8.0, 8.0)


def test_gunpowder_snapshots_newest_or_chosen(tmp_path, capsys):
    """Snapshots as gp.Snapshot writes them: offset and voxel_size only, channels first."""
    raw_key, target_key = gp.ArrayKey("RAW"), gp.ArrayKey("TARGET")
    voxel_size, offset = (8, 4), (-16, 12)
    raw = np.arange(30, dtype=np.float32).reshape(6, 5)
    target = np.stack([raw * 0 + c for c in range(4)]).astype(np.float32)
    pipeline = (
        ArraySource(raw_key, make_array(raw, offset, voxel_size)),
        ArraySource(target_key, make_array(target, offset, voxel_size)),
    ) + gp.MergeProvider()
    pipeline += gp.Snapshot(
        {raw_key: "raw", target_key: "target"},
        output_dir=str(tmp_path / "snapshots"),
        output_filename="batch_{iteration}.zarr",
        every=1,
    )
    roi = gp.Roi(offset, (48, 20))
    with gp.build(pipeline):
        for _ in range(3):  # batch_1, batch_2, batch_3
            pipeline.request_batch(
                gp.BatchRequest({raw_key: gp.ArraySpec(roi=roi), target_key: gp.ArraySpec(roi=roi)})
            )
    snapshots = tmp_path / "snapshots"
    state = state_only(capsys, snapshots)
    names = [layer["name"] for layer in state["layers"]]
    assert names == ["raw", "target/hot_0", "target/hot_1", "target/dist_0", "target/dist_1"]
    assert view.main([str(snapshots), "--state-only"]) == 0
    assert "showing batch_3.zarr of" in capsys.readouterr().err
    volumes = {v.name: v for v in view_layers.find_volumes(snapshots, batch=2)}
    assert volumes["raw"].axis_names == ("y", "x")  # gunpowder writes no axis names
    assert volumes["raw"].offset == (-16.0, 12.0)
    assert volumes["raw"].voxel_size == (8.0, 4.0)
    np.testing.assert_array_equal(volumes["target/dist_0"].data[:, :], target[2])


@pytest.mark.parametrize(
    "args, message",
    [
        (["{tmp}/missing"], "does not exist"),
        (["{tmp}/empty"], "neither a zarr container nor a directory holding one"),
        (["{tmp}/preview", "--batch", "7"], "no batch_7 in"),
        (["{tmp}/bare.zarr"], "nothing viewable under"),
    ],
)
def test_errors_exit_2_with_a_message(tmp_path, capsys, args, message):
    write_preview(tmp_path, batches=2)
    (tmp_path / "empty").mkdir()
    zarr.open_array(str(tmp_path / "bare.zarr" / "raw"), mode="w", shape=(4, 4), dtype="u1")
    assert view.main([a.format(tmp=tmp_path) for a in args] + ["--state-only"]) == 2
    assert message in capsys.readouterr().err


def test_channel_names_must_match_the_channel_count(tmp_path, capsys):
    data = np.zeros((3, 4, 4), dtype=np.float32)
    write_funlib(
        tmp_path / "c.zarr" / "target",
        data,
        (8, 8),
        (0, 0),
        ["c^", "y", "x"],
        channel_names=["a", "b"],
    )
    assert view.main([str(tmp_path / "c.zarr"), "--state-only"]) == 2
    assert "2 channel_names ['a', 'b'] for 3 channels" in capsys.readouterr().err


def test_segmentation_dtypes(tmp_path, capsys):
    """Boolean labels are served as uint8 segments; signed labels fall back to an image."""
    labels = np.array([[True, False], [False, True]])
    write_funlib(tmp_path / "l.zarr" / "gt", labels, (8, 8), (0, 0), ["y", "x"])
    write_funlib(
        tmp_path / "l.zarr" / "labels", labels.astype(np.int32) * -3, (8, 8), (0, 0), ["y", "x"]
    )
    viewer = view.make_viewer(view_layers.find_volumes(tmp_path / "l.zarr"))
    assert "labels has dtype int32, shown as an image" in capsys.readouterr().err
    layers = viewer.state.layers
    assert (layers["gt"].type, layers["labels"].type) == ("segmentation", "image")
    url = layers["gt"].source[0].url
    (source,) = [v for v in viewer.volume_manager.volumes.values() if url.endswith(v.token)]
    served = source.data[:, :]
    assert served.dtype == np.uint8
    np.testing.assert_array_equal(served, [[1, 0], [0, 1]])


@pytest.mark.parametrize(
    "name, role",
    [
        ("raw", "raw"),
        ("eval/raw", "raw"),
        ("gt/mito", "segmentation"),
        ("labels", "segmentation"),
        ("target/dist_mito", "distance"),
        ("prediction/dist_0", "distance"),
        ("target/hot_mito", "unit"),
        ("mask", "unit"),
        ("distance_mask/dist_er", "unit"),
        ("weights/dist_er", "other"),
        ("prediction/hot_0", "other"),
    ],
)
def test_layer_role(name, role):
    assert view_layers.layer_role(name) == role


def _screenshot(viewer: neuroglancer.Viewer, timeout: float) -> np.ndarray:
    """RGB pixels of a screenshot, or a failure after ``timeout`` seconds."""
    result = []
    thread = threading.Thread(
        target=lambda: result.append(viewer.screenshot(size=SCREENSHOT_SIZE)), daemon=True
    )
    thread.start()
    thread.join(timeout)
    if not result:
        pytest.fail(f"no screenshot from headless Chromium within {timeout} s")
    return result[0]


@pytest.mark.slow
def test_screenshot_in_headless_chromium(container, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium not installed (Debian: apt-get install chromium); screenshot skipped")
    root, _ = container
    neuroglancer.set_server_bind_address("127.0.0.1", 0)
    viewer = view.make_viewer(view_layers.find_volumes(root))
    url = viewer.get_viewer_url()
    assert url.startswith("http://127.0.0.1:")
    browser = subprocess.Popen(
        [
            chromium,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-unsafe-swiftshader",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium'}",
            url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with viewer.txn() as state:
            state.layout = "xy"
            state.cross_section_scale = 0.2  # 5 pixels per 4 nm voxel: raw is 100 x 120 pixels
            state.show_axis_lines = False
            state.show_scale_bar = False
            state.show_default_annotations = False  # layer bounding boxes
            for layer in state.layers:
                layer.visible = layer.name == "raw"
        start = time.monotonic()
        shot = _screenshot(viewer, timeout=120)
        seconds = time.monotonic() - start
        pixels = shot.screenshot.image_pixels[..., :3].astype(np.float64)
        (tmp_path / "raw.png").write_bytes(shot.screenshot.image)
        with viewer.txn() as state:
            state.layers["raw"].visible = False
        empty = _screenshot(viewer, timeout=120).screenshot.image_pixels[..., :3]
    finally:
        browser.kill()
        browser.wait()
    assert pixels.shape == (SCREENSHOT_SIZE[1], SCREENSHOT_SIZE[0], 3)
    # raw (uniform noise in [0, 1), shown over its data range) covers the centre
    h, w = SCREENSHOT_SIZE[1] // 4, SCREENSHOT_SIZE[0] // 4
    centre = pixels[h:-h, w:-w]
    assert centre.std() > 20, f"raw layer did not draw (std {centre.std():.1f}, {seconds:.1f} s)"
    # with every layer hidden the canvas is one colour, so the texture above is raw's
    assert np.ptp(empty.reshape(-1, 3), axis=0).max() == 0
