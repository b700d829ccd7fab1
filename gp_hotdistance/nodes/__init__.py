"""Gunpowder nodes computing the hot-distance target, distance mask and weights."""

from gp_hotdistance.nodes.distance_mask import DistanceMaskNode  # noqa: F401
from gp_hotdistance.nodes.target import TargetNode  # noqa: F401
from gp_hotdistance.nodes.weights import WeightNode  # noqa: F401
