"""Data as users keep it: OME-NGFF / funlib zarr volumes, annotated crops
read at the training voxel size, and gunpowder sources over them.

Importing this package does not import torch.
"""

from .nodes import RandomLabelledLocation  # noqa: F401
from .nodes import SampleSource  # noqa: F401
from .nodes import sample_sources  # noqa: F401
from .ome import OffGridWarning  # noqa: F401
from .ome import Volume  # noqa: F401
from .ome import open_volume  # noqa: F401
from .ome import prepare_volume  # noqa: F401
from .ome import write_volume  # noqa: F401
from .resample import downsample_all  # noqa: F401
from .resample import downsample_labels  # noqa: F401
from .resample import mean_pool  # noqa: F401
from .resample import upsample_nearest  # noqa: F401
from .sample import Sample  # noqa: F401
from .sample import expand_label_template  # noqa: F401
from .sample import union_cells  # noqa: F401
