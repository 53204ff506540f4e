"""Repository-wide pytest hooks (the fixtures live in tests/conftest.py).

Doctests are pure examples in the docstrings: they carry the ``unit`` marker,
so every tier that selects by marker (``make test-fast`` is ``-m unit``) runs
them too.
"""

from __future__ import annotations

import pytest
from _pytest.doctest import DoctestItem


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, DoctestItem):
            item.add_marker(pytest.mark.unit)
