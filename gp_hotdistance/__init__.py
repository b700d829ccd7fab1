"""gp_hotdistance: hot-distance training targets as gunpowder nodes.

The public names are loaded on first use, so ``import gp_hotdistance``
(and the predictor alone) does not import gunpowder or torch.
"""

__version__ = "0.1.0"

from gp_hotdistance._lazy import lazy_exports

_EXPORTS = {
    "Predictor": "gp_hotdistance.predictor",
    "HotDistancePredictor": "gp_hotdistance.predictor",
    "OutputArrayType": "gp_hotdistance.predictor",
    "TargetNode": "gp_hotdistance.nodes",
    "DistanceMaskNode": "gp_hotdistance.nodes",
    "WeightNode": "gp_hotdistance.nodes",
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
