"""Tests of the torch parts: UNet shapes, head, loss and post-processing."""

import math

import numpy as np
import pytest
import torch

from gp_hotdistance.torch import (
    HotDistanceLoss,
    UNet,
    append_head,
    probabilities,
    segment,
)


def test_unet_3d_output_shape():
    # 44 -2-2=40 -> pool 2 -> 20 -2-2=16 -> pool 2 -> 8 -2-2=4
    # -> up 8 -2-2=4 -> up 8 -2-2=4
    unet = UNet(1, 4, 2, [(2, 2, 2), (2, 2, 2)])
    assert unet.dims == 3
    assert unet.num_out_channels == 4
    assert unet.output_shape((44, 44, 44)) == (4, 4, 4)
    # each extra multiple of 4 (the total downsampling) adds 4 output voxels
    assert unet.output_shape((44, 48, 52)) == (4, 8, 12)
    with torch.no_grad():
        out = unet(torch.zeros(1, 1, 44, 48, 52))
    assert tuple(out.shape) == (1, 4, 4, 8, 12)


def test_unet_2d_output_shape():
    # 20 -2-2=16 -> pool 2 -> 8 -2-2=4 -> up 8 -2-2=4
    unet = UNet(3, 6, 3, [(2, 2)], upsampling="nearest")
    assert unet.dims == 2
    assert unet.output_shape((20, 22)) == (4, 6)
    with torch.no_grad():
        out = unet(torch.zeros(2, 3, 20, 22))
    assert tuple(out.shape) == (2, 6, 4, 6)


def test_unet_anisotropic_downsampling():
    # z:  10 -2 = 8 -> pool 1 -> 8, (1, 3, 3) kernels keep 8 -> up 1 -> 8 -2 = 6
    # y:  26 -2 = 24 -> pool 2 -> 12 -2-2 = 8 -> up 2 -> 16 -2 = 14
    # x:  28 -2 = 26 -> pool 2 -> 13 -2-2 = 9 -> up 2 -> 18 -2 = 16
    unet = UNet(
        1,
        2,
        2,
        [(1, 2, 2)],
        kernel_size_down=[[(3, 3, 3)], [(1, 3, 3), (1, 3, 3)]],
        kernel_size_up=[[(3, 3, 3)]],
    )
    assert unet.output_shape((10, 26, 28)) == (6, 14, 16)
    with torch.no_grad():
        out = unet(torch.zeros(1, 1, 10, 26, 28))
    assert tuple(out.shape) == (1, 2, 6, 14, 16)


def test_unet_same_padding_keeps_shape():
    unet = UNet(1, 2, 2, [(2, 2)], padding="same")
    assert unet.output_shape((8, 12)) == (8, 12)
    with torch.no_grad():
        assert tuple(unet(torch.zeros(1, 1, 8, 12)).shape) == (1, 2, 8, 12)


def test_valid_input_shape():
    unet = UNet(1, 4, 2, [(2, 2, 2), (2, 2, 2)])
    # valid sizes are 44 + 4k: the first conv pass must leave a multiple of 4
    assert unet.valid_input_shape((40, 45, 48)) == (44, 48, 48)
    assert unet.min_input_shape() == (44, 44, 44)
    for shape in [(44, 48, 48), unet.valid_input_shape((50, 61, 70))]:
        unet.output_shape(shape)  # does not raise


@pytest.mark.parametrize("shape", [(45, 44, 44), (40, 40, 40), (44, 44), (0, 44, 44)])
def test_invalid_input_shape(shape):
    unet = UNet(1, 4, 2, [(2, 2, 2), (2, 2, 2)])
    with pytest.raises(ValueError, match="shape"):
        unet.output_shape(shape)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"downsample_factors": [(2, 2, 2, 2)]}, "dims"),
        ({"downsample_factors": [(2,)]}, "dims"),
        ({"downsample_factors": []}, "downsample_factors"),
        ({"downsample_factors": [(2, 2), (2, 2, 2)]}, "downsample_factors"),
        ({"downsample_factors": [(2, 2)], "kernel_size_down": [[3]]}, "kernel_size_down"),
        ({"downsample_factors": [(2, 2)], "kernel_size_up": [[3], [3]]}, "kernel_size_up"),
        ({"downsample_factors": [(2, 2)], "num_fmaps": 0}, "num_fmaps"),
        ({"downsample_factors": [(2, 2)], "padding": "full"}, "padding"),
        ({"downsample_factors": [(2, 2)], "activation": "NoSuchThing"}, "activation"),
    ],
)
def test_unet_argument_errors(kwargs, name):
    arguments = {"in_channels": 1, "num_fmaps": 2, "fmap_inc_factor": 2, **kwargs}
    with pytest.raises(ValueError, match=name):
        UNet(**arguments)


def test_append_head():
    unet = UNet(1, 4, 2, [(2, 2, 2), (2, 2, 2)])
    model = append_head(unet, out_channels=6, kernel_size=3)
    assert model.dims == 3
    assert model.num_out_channels == 6
    assert model.backbone is unet
    assert isinstance(model.head, torch.nn.Conv3d)
    # the backbone gives (4, 8, 12); the 3^3 head shrinks each axis by 2
    assert model.output_shape((44, 48, 52)) == (2, 6, 10)
    with torch.no_grad():
        out = model(torch.zeros(1, 1, 44, 48, 52))
    assert tuple(out.shape) == (1, 6, 2, 6, 10)


def test_append_head_on_any_backbone():
    class Backbone(torch.nn.Module):
        dims = 2
        num_out_channels = 5

        def forward(self, x):
            return x

    model = append_head(Backbone(), out_channels=4, kernel_size=1)
    assert isinstance(model.head, torch.nn.Conv2d)
    assert tuple(model(torch.zeros(1, 5, 7, 9)).shape) == (1, 4, 7, 9)


@pytest.mark.parametrize("dims", [1, 4, None])
def test_append_head_dims_error(dims):
    class Backbone(torch.nn.Module):
        num_out_channels = 5

    backbone = Backbone()
    backbone.dims = dims
    with pytest.raises(ValueError, match="dims"):
        append_head(backbone, out_channels=4, kernel_size=1)


def _bce(logit: float, target: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def test_loss_matches_hand_formula():
    # (2C, x) with C = 1 and two voxels: channel 0 hot logits, channel 1 distances
    prediction = torch.tensor([[[0.5, -1.0]], [[0.2, -0.4]]])  # (2, 1, 2): unbatched 2-D
    target = torch.tensor([[[1.0, 0.0]], [[0.5, -0.5]]])
    weights = torch.tensor([[[2.0, 0.5]], [[3.0, 1.0]]])
    expected_hot = (2.0 * _bce(0.5, 1.0) + 0.5 * _bce(-1.0, 0.0)) / 2
    # weights are not squared: 3 * 0.3^2 + 1 * 0.1^2
    expected_dist = (3.0 * 0.3**2 + 1.0 * 0.1**2) / 2
    loss = HotDistanceLoss()(prediction, target, weights)
    assert loss.item() == pytest.approx(expected_hot + expected_dist, rel=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
def test_loss_batched_equals_unbatched(dims):
    rng = np.random.default_rng(0)
    shape = (2, 4) + (3,) * dims  # B = 2, 2C = 4
    prediction, target, weights = (
        torch.from_numpy(rng.normal(size=shape).astype(np.float32)) for _ in range(3)
    )
    target[:, :2] = (target[:, :2] > 0).float()
    loss = HotDistanceLoss(dims=dims)
    batched = loss(prediction, target, weights)
    per_sample = [loss(prediction[b], target[b], weights[b]) for b in range(2)]
    assert batched.item() == pytest.approx(sum(x.item() for x in per_sample) / 2, rel=1e-5)


def test_loss_zero_weights_give_zero_gradient():
    rng = np.random.default_rng(1)
    prediction = torch.tensor(rng.normal(size=(1, 4, 3, 3, 3)), requires_grad=True)
    target = torch.tensor(rng.uniform(size=(1, 4, 3, 3, 3)))
    weights = torch.zeros(1, 4, 3, 3, 3, dtype=torch.float64)
    loss = HotDistanceLoss()(prediction, target, weights)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.count_nonzero(prediction.grad) == 0


def test_loss_errors():
    loss = HotDistanceLoss()
    with pytest.raises(ValueError, match="same shape"):
        loss(torch.zeros(1, 2, 3, 3, 3), torch.zeros(1, 2, 3, 3, 2), torch.zeros(1, 2, 3, 3, 3))
    with pytest.raises(ValueError, match="2C"):
        loss(torch.zeros(1, 3, 3, 3, 3), torch.zeros(1, 3, 3, 3, 3), torch.zeros(1, 3, 3, 3, 3))
    with pytest.raises(ValueError, match="dims"):
        loss(torch.zeros(2, 3, 3, 3), torch.zeros(2, 3, 3, 3), torch.zeros(2, 3, 3, 3))
    with pytest.raises(ValueError, match="dims"):
        HotDistanceLoss(dims=4)


def test_probabilities_and_segment():
    # C = 2 classes on 1x3 voxels: logits 0 -> p 0.5, not above the threshold
    prediction = np.array(
        [
            [[2.0, 0.0, -3.0]],  # hot, class 0
            [[-1.0, 4.0, 0.1]],  # hot, class 1
            [[0.7, 0.0, -0.9]],  # distance, class 0
            [[-0.2, 0.8, 0.05]],  # distance, class 1
        ],
        dtype=np.float32,
    )
    probs = probabilities(prediction)
    sigmoid = 1 / (1 + np.exp(-prediction[:2].astype(np.float64)))
    np.testing.assert_allclose(probs[:2], sigmoid, rtol=1e-6)
    np.testing.assert_array_equal(probs[2:], prediction[2:])
    np.testing.assert_array_equal(
        segment(prediction), [[[True, False, False]], [[False, True, True]]]
    )
    # threshold 0.9 keeps only logits above log(9) ~ 2.197
    np.testing.assert_array_equal(
        segment(torch.from_numpy(prediction), threshold=0.9),
        [[[False, False, False]], [[False, True, False]]],
    )


def test_postprocess_errors():
    with pytest.raises(ValueError, match="threshold"):
        segment(np.zeros((2, 3, 3)), threshold=1.0)
    with pytest.raises(ValueError, match="2C"):
        probabilities(np.zeros((3, 3, 3)))
