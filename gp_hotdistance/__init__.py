"""gp_hotdistance: hot-distance training targets as gunpowder nodes.

The public names are loaded on first use, so ``import gp_hotdistance``
(and the predictor alone) does not import gunpowder or torch.
"""

__version__ = "0.1.0"

_EXPORTS = {
    "Predictor": "gp_hotdistance.predictor",
    "HotDistancePredictor": "gp_hotdistance.predictor",
    "OutputArrayType": "gp_hotdistance.predictor",
    "TargetNode": "gp_hotdistance.nodes",
    "DistanceMaskNode": "gp_hotdistance.nodes",
    "WeightNode": "gp_hotdistance.nodes",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
