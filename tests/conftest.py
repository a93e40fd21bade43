"""Fixtures shared by the test modules."""

import importlib.util
from pathlib import Path

import pytest

from layoutops.kernels import conv as kconv
from layoutops.kernels import pool as kpool
from layoutops.kernels.threads import set_num_threads


@pytest.fixture
def threads():
    """Run with a given thread count (call the fixture's value with it), restored afterwards."""
    previous = set_num_threads(None)
    yield set_num_threads
    set_num_threads(previous)


@pytest.fixture(scope="session")
def benchmark_script():
    """A loader of the scripts under ``benchmarks/`` as modules: ``benchmark_script(name)``."""

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def no_tiny_path(monkeypatch):
    """Small convolutions take the tiled paths too (`layoutops.kernels.conv._tiny_im2col`
    off): for the tests that force or watch one of those paths on small inputs."""
    monkeypatch.setattr(kconv, "_TINY_BYTES", 0)


@pytest.fixture(params=["tiny path", "tiled paths"])
def both_small_paths(request, monkeypatch):
    """Run the test twice: small convolutions on `layoutops.kernels.conv._tiny_im2col` (the
    default) and on the tiled paths larger ones take."""
    if request.param == "tiled paths":
        monkeypatch.setattr(kconv, "_TINY_BYTES", 0)
    return request.param


@pytest.fixture(params=["arg-max path", "running form"])
def both_argmax_paths(request, monkeypatch):
    """Run the test twice: small max pools with indices by `np.argmax` over their copied
    windows (`layoutops.kernels.pool._small_argmax`, the default) and by the running form
    larger ones take."""
    if request.param == "running form":
        monkeypatch.setattr(kpool, "_SMALL_ARGMAX", False)
    return request.param
