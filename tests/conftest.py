"""Fixtures shared by the test modules."""

import pytest

from layoutops.kernels.threads import set_num_threads


@pytest.fixture
def threads():
    """Run with a given thread count (call the fixture's value with it), restored afterwards."""
    previous = set_num_threads(None)
    yield set_num_threads
    set_num_threads(previous)
