"""Data selection (the paper's Algorithm 2, §4.3–4.4; docs/select.md): the corpus cut into windows, their
gradient-norm scores predicted and length-corrected, the kept fraction written as a manifest, and the
cross-influence map of submodules × data blocks. Pure: numpy, scipy and scikit-learn; the ranks compute the
per-example gradients (orchestrator/worker/scoring.py) and pass plain arrays in."""

from orchestrator.select.influence import CrossInfluence, cross_influence
from orchestrator.select.manifest import MANIFEST_FORMAT, SelectionManifest, load_manifest
from orchestrator.select.scores import PredictorReport, choose, fit_predictor, length_bias
from orchestrator.select.windows import Windows, cut_windows

__all__ = [
    "MANIFEST_FORMAT",
    "CrossInfluence",
    "PredictorReport",
    "SelectionManifest",
    "Windows",
    "choose",
    "cross_influence",
    "cut_windows",
    "fit_predictor",
    "length_bias",
    "load_manifest",
]
