"""Torch parts: U-Net backbone, hot-distance head, loss, post-processing, a
training dataset and class balancing on the device.

``HotDistanceDataset`` (which imports gunpowder) is loaded on first use.
"""

from gp_hotdistance._lazy import lazy_exports

from .balance import BalancedWeights  # noqa: F401
from .loss import HotDistanceLoss  # noqa: F401
from .model import HotDistanceModel  # noqa: F401
from .model import UNet  # noqa: F401
from .model import append_head  # noqa: F401
from .postprocess import probabilities  # noqa: F401
from .postprocess import segment  # noqa: F401

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "HotDistanceDataset": "gp_hotdistance.torch.dataset",
        "hot_distance_pipeline": "gp_hotdistance.torch.dataset",
    },
)
