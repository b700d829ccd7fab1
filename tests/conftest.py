"""The notebook is a slow test too: nbmake collects it without a way to
decorate it, so it is marked here (``pytest -m "not slow"`` skips it)."""

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)
