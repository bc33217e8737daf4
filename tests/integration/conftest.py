"""Every test here starts real engines (Ray, DeepSpeed, MLflow, a venv): marked `integration`, so `make test` (and a
bare `pytest`) leaves them to `make test-integration`."""

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)
