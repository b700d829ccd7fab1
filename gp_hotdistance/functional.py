"""The kernels' public functions under their first import path;
they live in :mod:`gp_hotdistance.kernels`, one module per concern."""

from gp_hotdistance.kernels import *  # noqa: F403
from gp_hotdistance.kernels import __all__  # noqa: F401
