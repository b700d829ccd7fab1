"""A plain PyTorch training loop: python -m examples.plain_loop [OUT] [STEPS]"""

import sys
from pathlib import Path

import torch

from gp_hotdistance import HotDistancePredictor
from gp_hotdistance.data import Sample
from gp_hotdistance.torch import BalancedWeights, HotDistanceDataset, HotDistanceLoss, UNet
from gp_hotdistance.torch.inference import input_shape_for
from pipelines.demo_data import make_cellmap_demo

if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/plain_loop")
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    demo = make_cellmap_demo(out / "demo_data.zarr", raw_shape=(256, 256))  # 2-D, 8 nm voxels
    channels, voxel_size = ["mito", "er"], demo.voxel_size
    samples = [  # a raw volume and {class: label dataset} per annotated crop
        Sample(s["raw"], s["labels"], channels, voxel_size) for s in demo.data_section()["samples"]
    ]
    predictor = HotDistancePredictor(channels, scale_factor=40.0, mask_distances=True)
    model = predictor.create_model(UNet(1, 8, 2, [(2, 2)]))
    output_shape = (32, 32)
    input_shape = input_shape_for(model, output_shape)
    dataset = HotDistanceDataset(samples, predictor, voxel_size, input_shape, output_shape, seed=0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2)
    balanced = BalancedWeights(predictor)  # moving class counts, saved with the model
    loss_fn = HotDistanceLoss(dims=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step, batch in zip(range(1, steps + 1), loader, strict=False):  # the stream is endless
        weights = balanced(batch["target"], batch["mask"], batch["distance_mask"])
        loss = loss_fn(model(batch["raw"]), batch["target"], weights)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 20 == 0 or step == steps:
            print(f"step {step}: loss {loss.item():.4f}")
    torch.save({"model": model.state_dict(), "balanced": balanced.state_dict()}, out / "model.pt")
