"""Torch parts: U-Net backbone, hot-distance head, loss and post-processing."""

from .loss import HotDistanceLoss  # noqa: F401
from .model import HotDistanceModel  # noqa: F401
from .model import UNet  # noqa: F401
from .model import append_head  # noqa: F401
from .model import default_device  # noqa: F401
from .postprocess import probabilities  # noqa: F401
from .postprocess import segment  # noqa: F401
