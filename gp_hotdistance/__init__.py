"""gp_hotdistance: hot-distance training targets as gunpowder nodes."""

__version__ = "0.1.0"

from gp_hotdistance.predictor import HotDistancePredictor  # noqa: F401
from gp_hotdistance.predictor import OutputArrayType  # noqa: F401
from gp_hotdistance.predictor import Predictor  # noqa: F401
from gp_hotdistance.nodes import TargetNode  # noqa: F401
from gp_hotdistance.nodes import DistanceMaskNode  # noqa: F401
from gp_hotdistance.nodes import WeightNode  # noqa: F401
