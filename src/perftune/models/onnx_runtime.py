"""A fitted PyTorch network exported to ONNX and run by onnxruntime, where that serves it faster.

At ``perftune register`` a network of the PyTorch families is exported (``torch.onnx.export``, the
``torch.export``-based exporter, with a dynamic batch size) and checked: onnxruntime's logits must match torch's
on the test rows. Registration then measures both runtimes on the same rows and serves the faster one (see
:func:`perftune.registry.register.refit`); the ONNX file is stored with the version either way. A dynamically
quantized network is not exported: ``torch.ao``'s quantized Linear layers have no ONNX form in this exporter.

torch is the source of truth: the registered pipeline holds the torch network (explanations integrate its
gradients); onnxruntime only replaces its forward pass when serving.
"""

from __future__ import annotations

import io
import logging
import warnings
from typing import Any

import numpy as np

from perftune.errors import PerftuneError

INPUT, OUTPUT = "features", "logits"
RTOL, ATOL = 1e-3, 1e-4  # float32 kernels differ in summation order; more than this is a wrong export


class NotExportable(PerftuneError):
    """This network cannot be exported to ONNX (the reason says why)."""


def export(net: Any, X: np.ndarray) -> bytes:
    """The ONNX bytes of ``net`` (inputs: rows of ``X``'s width, any batch size), checked against torch on ``X``."""
    import torch

    from perftune.models.torch_estimator import quantized

    if any(quantized(m) for m in net.modules()):
        raise NotExportable("a dynamically quantized network has no ONNX export here; torch serves it")
    sample = torch.from_numpy(np.ascontiguousarray(X[:2], dtype=np.float32))
    net.eval()
    quiet = logging.getLogger("torch.onnx._internal.exporter._registration")  # "torchvision is not installed"
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    with warnings.catch_warnings():  # the exporter's notes on optional packages (torchvision ops) it does not need
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                net, (sample,), input_names=[INPUT], output_names=[OUTPUT],
                dynamic_shapes=({0: torch.export.Dim("rows")},), dynamo=True, verbose=False,
            )  # fmt: skip
        except Exception as exc:  # the exporter's errors are long; its first line says what failed
            raise NotExportable(f"torch.onnx.export failed: {str(exc).splitlines()[0][:300]}") from None
        finally:
            quiet.setLevel(level)
    check = np.ascontiguousarray(X[:256], dtype=np.float32)
    try:
        buffer = io.BytesIO()
        program.save(buffer)
        model = buffer.getvalue()
        got = OnnxNetwork(model).logits(check)  # onnxruntime loads and runs what was written
    except Exception as exc:
        raise NotExportable(f"onnxruntime cannot run the export: {str(exc).splitlines()[0][:300]}") from None
    with torch.inference_mode():
        expected = net(torch.from_numpy(check)).numpy()
    if not np.allclose(got, expected, rtol=RTOL, atol=ATOL):
        worst = float(np.max(np.abs(got - expected)))
        raise NotExportable(f"onnxruntime's logits differ from torch's by up to {worst:.3g}; torch serves it")
    return model


class OnnxNetwork:
    """An onnxruntime session of an exported network: feature rows → logits, on ``threads`` intra-op threads
    (the process's thread setting: see :mod:`perftune.measure.threads`)."""

    def __init__(self, model: bytes, threads: int = 1) -> None:
        import onnxruntime as ort

        from perftune.measure.threads import session_options

        self.model = model
        self.session = ort.InferenceSession(model, session_options(threads), providers=["CPUExecutionProvider"])

    def logits(self, X: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT], {INPUT: np.ascontiguousarray(X, dtype=np.float32)})[0]
