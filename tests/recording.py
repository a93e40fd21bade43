"""Spies for the tests that force one kernel path: which calls took it, and the thread count
of every `parallel` call a module makes."""

from __future__ import annotations


def record_taken(monkeypatch, module, name: str, taken=lambda result: result is not None):
    """Replace ``module.name`` by a wrapper that calls it and appends ``taken(result)`` to the
    returned list (a path function returns None or False when it does not apply)."""
    calls: list[bool] = []
    original = getattr(module, name)

    def recording(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append(bool(taken(result)))
        return result

    monkeypatch.setattr(module, name, recording)
    return calls


def spy_parallel(monkeypatch, module):
    """Record the thread count of every `parallel` call the module makes."""
    calls = []
    original = module.parallel

    def recording(fn, items, threads=None):
        calls.append(threads)
        return original(fn, items, threads)

    monkeypatch.setattr(module, "parallel", recording)
    return calls
