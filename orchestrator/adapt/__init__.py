"""Blueprint-guided submodule adaptation (the paper's Algorithm 1, §4 practical considerations; docs/adapt.md).

Pure: plain Python, numpy and scipy. It decides which submodules to train; the engine
(`orchestrator.worker.engine.build_engine(trainable=...)`) freezes the rest.
"""

from orchestrator.adapt.selection import (
    STRATEGIES,
    Budget,
    LinearShape,
    LisaSchedule,
    LoraDescriptor,
    Row,
    Selection,
    SelectionRequest,
    Strategy,
    SubmoduleInput,
    inputs_from_blueprint,
    select,
    trainable_names,
)

__all__ = [
    "STRATEGIES",
    "Budget",
    "LinearShape",
    "LisaSchedule",
    "LoraDescriptor",
    "Row",
    "Selection",
    "SelectionRequest",
    "Strategy",
    "SubmoduleInput",
    "inputs_from_blueprint",
    "select",
    "trainable_names",
]
