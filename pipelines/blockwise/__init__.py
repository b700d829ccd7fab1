"""Hot-distance targets, prediction and segmentation for whole zarr volumes,
block by block on daisy.

Three commands (``python -m pipelines.blockwise --help``)::

    python -m pipelines.blockwise targets --input data.zarr --gt gt --mask mask \\
        --output out.zarr --block-shape 32 64 64 --workers 2 [--config run/config.json]
    python -m pipelines.blockwise predict --run runs/demo --input data.zarr --raw eval/raw \\
        --output out.zarr --block-shape 32 128 128 --workers 2
    python -m pipelines.blockwise targets --config c.yaml --sample 0 \\
        --output out.zarr --block-shape 32 32 32
    python -m pipelines.blockwise segment --run runs/demo --input out.zarr \\
        --prediction prediction --output seg.zarr --block-shape 64 64 64 --workers 2

Inputs are OME-NGFF multiscale groups or funlib arrays (``--sample N``: the
config's ``data.samples[N]`` through ``gp_hotdistance.data.Sample``); every
output is an OME-NGFF group ``name/`` with the array ``name/s0``.
Block shapes are in voxels, contexts and ROIs in world units. Modules: ``plan``
(check inputs, prepare outputs, build the job), ``outputs`` (output
datasets and done markers), ``jobs`` (one block's work), ``run`` (the daisy
runner), ``worker`` (workers started by ``--worker-command``), ``jobfile``
(their sealed job), ``relay`` (their authenticated way to the scheduler),
``segment`` (instances and masks: fragments, merge, relabel), ``cli``
(the command line; ``options``: the flags every command shares;
``segment_cli``: the segment command).
Geometry, the exactness condition of blockwise targets,
resuming and cluster workers are described in ``docs/blockwise.md``.
"""

from gp_hotdistance._lazy import lazy_exports
from pipelines.blockwise.jobs import BlockJob, PredictJob, TargetsJob
from pipelines.blockwise.outputs import DoneMarkers, OutputMismatchError, OutputSpec
from pipelines.blockwise.run import BlockwiseError, Report, run_job

# planning and the command line import the predictor and config layers:
# loaded on first use, so that a worker process does not pay for them
_EXPORTS = {
    "main": "pipelines.blockwise.cli",
    "plan_predict": "pipelines.blockwise.plan",
    "plan_targets": "pipelines.blockwise.plan",
}

__all__ = [
    "BlockJob",
    "BlockwiseError",
    "DoneMarkers",
    "OutputMismatchError",
    "OutputSpec",
    "PredictJob",
    "Report",
    "TargetsJob",
    "run_job",
    *_EXPORTS,
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
