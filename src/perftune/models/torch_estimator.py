"""A fitted PyTorch network as a scikit-learn classifier: the last step of a served pipeline (after its features
step), so that registering, serving and explaining treat it like every other family's estimator."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

EVAL_BATCH = 2048
QUANTIZED = "torch.ao.nn.quantized"  # the modules torch.ao's quantization puts in place of float layers


def quantized(module: Any, dynamic: bool = False) -> bool:
    """Whether ``module`` is one of torch.ao's quantized layers (``dynamic``: a dynamically quantized one)."""
    return type(module).__module__.startswith(QUANTIZED + (".dynamic" if dynamic else ""))


class TorchClassifier(ClassifierMixin, BaseEstimator):
    """A fitted network as a scikit-learn-style classifier (``classes_``, ``predict``, ``predict_proba``): the
    last step of the served pipeline, after the features step."""

    # an OnnxNetwork serving the forward pass instead of torch (see use_onnx); a class attribute, so that a
    # classifier pickled before onnxruntime serving existed reads None too
    onnx: Any = None

    def __init__(self, net: Any, classes: np.ndarray) -> None:
        self.net, self.classes = net, classes
        self.classes_ = np.asarray(classes)

    def use_onnx(self, model: bytes | None, threads: int | None = None) -> TorchClassifier:
        """Run the forward pass with onnxruntime on ``model`` (the network's ONNX export), or torch again (None),
        on ``threads`` intra-op threads (default: as many as torch uses in this process). The torch network stays:
        explanations integrate its gradients."""
        import torch

        from perftune.models.onnx_runtime import OnnxNetwork

        threads = torch.get_num_threads() if threads is None else threads
        self.onnx = None if model is None else OnnxNetwork(model, threads=threads)
        return self

    def to_cpu(self) -> TorchClassifier:
        """Move the network to the CPU, where it is served (a no-op for one trained there)."""
        self.net = self.net.cpu()
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for serving on the CPU: a network trained on a GPU is copied there first."""
        state = dict(self.__dict__)
        state.pop("onnx", None)  # a session is not pickled (the ONNX file is stored beside the model): None on load
        if any(p.device.type != "cpu" for p in self.net.parameters()):
            import copy

            state["net"] = copy.deepcopy(self.net).cpu()
        return state

    def fit(self, X: Any, y: Any = None) -> TorchClassifier:  # the pipeline protocol; training is the trial's
        return self

    def logits(self, X: Any) -> np.ndarray:
        import torch

        X = np.asarray(X, dtype=np.float32)
        if self.onnx is not None:
            forward = self.onnx.logits
        else:
            device = next((p.device for p in self.net.parameters()), torch.device("cpu"))
            self.net.eval()

            def forward(rows: np.ndarray) -> np.ndarray:
                return self.net(torch.from_numpy(rows).to(device)).cpu().numpy()

        with torch.inference_mode():
            parts = [forward(X[i : i + EVAL_BATCH]) for i in range(0, len(X), EVAL_BATCH)]
        return np.concatenate(parts) if parts else np.empty((0, len(self.classes_)), dtype=np.float32)

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[np.argmax(self.logits(X), axis=1)]

    def predict_proba(self, X: Any) -> np.ndarray:
        logits = self.logits(X)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)
