"""Array kernels of the hot-distance predictor: numpy, edt and numba loops.

No gunpowder, no torch: every function takes plain arrays plus an explicit
``voxel_size`` (world units per voxel, one entry per spatial axis) and returns
new arrays. Channels lead, spatial axes trail. One module per concern:

- :mod:`.validation`: checks of inputs (voxel sizes, binary channels, masks,
  moving counts), of the predictor's parameters (finite numbers, channel
  names) and :func:`to_channels`;
- :mod:`.transform`: the exact signed distance to label faces and the
  hot-distance target (:mod:`.envelope` holds its lower envelopes);
- :mod:`.masking`: the distances a crop cannot know;
- :mod:`.balancing`: class-balanced weights with moving counts;
- :mod:`.threads`: numba compilation with an on-disk cache and the thread
  pool that large arrays are split over.
"""

from gp_hotdistance.kernels.balancing import balance_weights  # noqa: F401
from gp_hotdistance.kernels.balancing import hot_distance_weights  # noqa: F401
from gp_hotdistance.kernels.balancing import new_moving_counts  # noqa: F401
from gp_hotdistance.kernels.masking import boundary_distance  # noqa: F401
from gp_hotdistance.kernels.masking import distance_mask  # noqa: F401
from gp_hotdistance.kernels.threads import THREADS_ENV  # noqa: F401
from gp_hotdistance.kernels.threads import kernel_threads  # noqa: F401
from gp_hotdistance.kernels.transform import hot_distance_target  # noqa: F401
from gp_hotdistance.kernels.transform import no_boundary_extent  # noqa: F401
from gp_hotdistance.kernels.transform import signed_distance  # noqa: F401
from gp_hotdistance.kernels.validation import SUPPORTED_DIMS  # noqa: F401
from gp_hotdistance.kernels.validation import MovingCounts  # noqa: F401
from gp_hotdistance.kernels.validation import broadcast_mask  # noqa: F401
from gp_hotdistance.kernels.validation import check_binary  # noqa: F401
from gp_hotdistance.kernels.validation import check_class_ids  # noqa: F401
from gp_hotdistance.kernels.validation import check_dims  # noqa: F401
from gp_hotdistance.kernels.validation import check_mask  # noqa: F401
from gp_hotdistance.kernels.validation import check_moving_counts  # noqa: F401
from gp_hotdistance.kernels.validation import check_not_empty  # noqa: F401
from gp_hotdistance.kernels.validation import check_voxel_size  # noqa: F401
from gp_hotdistance.kernels.validation import is_integer  # noqa: F401
from gp_hotdistance.kernels.validation import is_real  # noqa: F401
from gp_hotdistance.kernels.validation import to_channels  # noqa: F401

__all__ = [
    "MovingCounts",
    "SUPPORTED_DIMS",
    "THREADS_ENV",
    "balance_weights",
    "boundary_distance",
    "broadcast_mask",
    "check_binary",
    "check_class_ids",
    "check_dims",
    "check_mask",
    "check_moving_counts",
    "check_not_empty",
    "check_voxel_size",
    "distance_mask",
    "hot_distance_target",
    "hot_distance_weights",
    "is_integer",
    "is_real",
    "kernel_threads",
    "new_moving_counts",
    "no_boundary_extent",
    "signed_distance",
    "to_channels",
]
