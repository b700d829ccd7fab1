"""Data as users keep it: OME-NGFF / funlib zarr volumes, annotated crops
read at the training voxel size, and gunpowder sources over them.

The public names are loaded on first use: importing this package (or
``gp_hotdistance.data.ome``) imports neither gunpowder nor torch; the
gunpowder nodes load gunpowder when they are first used.
"""

from gp_hotdistance._lazy import lazy_exports

_EXPORTS = {
    "DatasplitRow": "gp_hotdistance.data.datasplit",
    "read_datasplit": "gp_hotdistance.data.datasplit",
    "write_datasplit": "gp_hotdistance.data.datasplit",
    "RandomLabelledLocation": "gp_hotdistance.data.nodes",
    "SampleSource": "gp_hotdistance.data.nodes",
    "sample_sources": "gp_hotdistance.data.nodes",
    "OffGridWarning": "gp_hotdistance.data.ome",
    "Volume": "gp_hotdistance.data.volume",
    "VolumeReadError": "gp_hotdistance.data.volume",
    "VolumeWriteError": "gp_hotdistance.data.volume",
    "open_volume": "gp_hotdistance.data.ome",
    "prepare_volume": "gp_hotdistance.data.write",
    "write_volume": "gp_hotdistance.data.write",
    "downsample_all": "gp_hotdistance.data.resample",
    "downsample_labels": "gp_hotdistance.data.resample",
    "mean_pool": "gp_hotdistance.data.resample",
    "upsample_linear": "gp_hotdistance.data.resample",
    "upsample_nearest": "gp_hotdistance.data.resample",
    "DataValueError": "gp_hotdistance.data.sample",
    "Sample": "gp_hotdistance.data.sample",
    "expand_label_template": "gp_hotdistance.data.sample",
    "normalize_raw": "gp_hotdistance.data.sample",
    "union_cells": "gp_hotdistance.data.sample",
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
