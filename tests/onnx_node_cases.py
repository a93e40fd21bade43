"""Capture the cases of an ONNX backend node-test class (shared by the ONNX test files)."""

from __future__ import annotations

import importlib

import numpy as np


def collect(module_name: str, class_name: str):
    """Run every ``export*`` of ``onnx.backend.test.case.node.<module_name>.<class_name>`` with
    ``expect`` captured: a list of ``(name, node, inputs, expected_output)``."""
    cases = importlib.import_module(f"onnx.backend.test.case.node.{module_name}")
    captured = []

    def fake_expect(node, inputs, outputs, name, **kwargs):
        captured.append((name, node, [np.asarray(a) for a in inputs], np.asarray(outputs[0])))

    original = cases.expect
    cases.expect = fake_expect
    try:
        cls = getattr(cases, class_name)
        for attr in sorted(dir(cls)):
            if attr.startswith("export"):
                getattr(cls, attr)()
    finally:
        cases.expect = original
    return captured
