"""Neural-network families on PyTorch (CPU): an MLP for any numeric features (pixels, a bag of words) and a small
CNN for square images given as rows of pixels.

=============  ===========================================================================================
family         network
=============  ===========================================================================================
torch_mlp      ``layers`` × (Linear → ReLU → Dropout) of ``hidden_units``, then a Linear to the classes
torch_cnn      2 × (Conv 3×3 → ReLU → MaxPool 2) with ``channels`` and 2·``channels`` filters, then
               Linear → ReLU → Dropout of ``hidden_units``, then a Linear to the classes
=============  ===========================================================================================

Both train with cross-entropy and Adam (or SGD with momentum 0.9), one mini-batch per :meth:`step`, in as many
threads as the study gives a trial (``cpus_per_trial``). ``device: auto`` trains on a CUDA GPU when torch sees one
(the probe then reports ``gpu_memory_mb``, the peak torch allocated) and on the CPU otherwise; a fitted network is
pickled for serving on the CPU, and dynamic quantization runs there. Networks are plain ``torch.nn.Sequential``
stacks, so a fitted one pickles and loads without perftune's classes. torch is imported when a trainer is built:
checking a spec against the families' hyperparameters must not wait for it.
"""

from __future__ import annotations

import io
import math
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from perftune.models.base import TaskInfo, TrainingParams, TrialDiverged, register_family


class TorchParams(TrainingParams):
    """Hyperparameters shared by the PyTorch families."""

    learning_rate: float = Field(default=1e-3, gt=0, description="the optimizer's step size")
    optimizer: Literal["adam", "sgd"] = "adam"
    weight_decay: float = Field(default=0.0, ge=0, description="L2 penalty (the optimizer's weight_decay)")
    dropout: float = Field(default=0.2, ge=0, lt=1)
    hidden_units: int = Field(default=256, ge=1)
    quantize: bool = Field(default=False, description="dynamic int8 quantization of the Linear layers after training")
    prune: float = Field(
        default=0.0, ge=0, lt=1, description="after training, zero this fraction of weights (global L1 magnitude)"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="where to train: auto is a CUDA GPU when torch sees one, else the CPU"
    )


class MLPParams(TorchParams):
    layers: int = Field(default=1, ge=1, le=4, description="hidden layers")


class CNNParams(TorchParams):
    channels: int = Field(default=16, ge=1, le=128, description="filters of the first convolution")


class _TorchTrainer:
    """Shared training, evaluation, prediction and serialization; subclasses build the network."""

    name: ClassVar[str]
    Params: ClassVar[type[TrainingParams]]
    tasks: ClassVar[frozenset[str]] = frozenset({"classification"})

    def __init__(self, params: TorchParams, info: TaskInfo, seed: int) -> None:
        import torch

        if info.classes is None:
            raise ValueError(f"{self.name} needs the list of classes")
        torch.set_num_threads(max(1, info.threads))
        torch.manual_seed(seed)
        self.params, self.info = params, info
        self.classes = np.asarray(info.classes)
        self.device = _device(params.device)
        self.net = self.build(params, info).to(self.device)
        if params.optimizer == "adam":
            self.optimizer: Any = torch.optim.Adam(
                self.net.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay
            )
        else:
            self.optimizer = torch.optim.SGD(
                self.net.parameters(), lr=params.learning_rate, momentum=0.9, weight_decay=params.weight_decay
            )
        self.loss = torch.nn.CrossEntropyLoss()

    def build(self, params: Any, info: TaskInfo) -> Any:
        raise NotImplementedError

    def _inputs(self, X: np.ndarray) -> Any:
        import torch

        return torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(self.device)

    def _targets(self, y: np.ndarray) -> Any:
        import torch

        return torch.from_numpy(np.searchsorted(self.classes, y).astype(np.int64)).to(self.device)

    def step(self, X: np.ndarray, y: np.ndarray) -> float:
        self.net.train()
        loss = self.loss(self.net(self._inputs(X)), self._targets(y))
        value = float(loss.item())
        if not math.isfinite(value):
            raise TrialDiverged(f"training loss became {value} (learning rate too large for this data?)")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return value

    def logits(self, X: np.ndarray) -> np.ndarray:
        """The network's outputs for ``X`` (evaluation mode, in batches)."""
        return self.estimator.logits(X)  # one implementation: the served classifier's

    def evaluate(self, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
        import torch

        logits = self.logits(X)
        loss = float(self.loss(torch.from_numpy(logits), self._targets(y).cpu()).item())
        accuracy = float(np.mean(self.classes[np.argmax(logits, axis=1)] == y))
        if not math.isfinite(loss):
            raise TrialDiverged(f"validation loss is {loss}")
        return {"val_loss": loss, "accuracy": accuracy}

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.estimator.predict(X)

    @property
    def compresses(self) -> bool:
        """Whether the configuration asks for post-training compression (see :meth:`compress`)."""
        return bool(self.params.quantize or self.params.prune > 0)

    def compress(self) -> dict[str, float]:
        """Prune (``prune``: the smallest weights of every Linear and Conv layer by magnitude, globally, made
        permanent), then quantize (``quantize``: Linear layers to dynamic int8, ``torch.ao.quantization``).
        Returns the resulting ``sparsity``."""
        import warnings

        import torch
        from torch import nn
        from torch.nn.utils import prune

        layers = [(m, "weight") for m in self.net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        if self.params.prune > 0:
            prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=self.params.prune)
            for module, name in layers:
                prune.remove(module, name)
        total = sum(m.weight.numel() for m, _ in layers)
        sparsity = sum(int((m.weight == 0).sum()) for m, _ in layers) / total
        if self.params.quantize:
            self.net, self.device = self.net.cpu(), torch.device("cpu")  # dynamic int8 kernels run on the CPU
            with warnings.catch_warnings():  # torch.ao's quantized tensors are deprecated in favour of torchao
                warnings.simplefilter("ignore")
                self.net = torch.ao.quantization.quantize_dynamic(self.net, {nn.Linear}, dtype=torch.qint8)
        return {"sparsity": sparsity}

    def serialize(self) -> bytes:
        import torch

        buffer = io.BytesIO()
        state = self.net.state_dict()
        if self.device.type != "cpu":  # a quantized network is on the CPU already and holds non-tensor entries
            state = {k: v.cpu() for k, v in state.items()}
        torch.save(state, buffer)
        return buffer.getvalue()

    @property
    def estimator(self) -> Any:
        """The network as a scikit-learn classifier (:class:`perftune.models.torch_estimator.TorchClassifier`)."""
        from perftune.models.torch_estimator import TorchClassifier

        return TorchClassifier(self.net, self.classes)


def _device(asked: str) -> Any:
    import torch

    if asked == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' was asked for, but torch sees no CUDA GPU (no GPU, or a CPU build of torch); "
            "use device 'auto' or 'cpu'"
        )
    device = torch.device("cuda" if asked != "cpu" and torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)  # gpu_memory_mb is this trial's peak
    return device


@register_family
class TorchMLP(_TorchTrainer):
    """A multilayer perceptron with ReLU and dropout."""

    name = "torch_mlp"
    Params = MLPParams

    def build(self, params: MLPParams, info: TaskInfo) -> Any:
        from torch import nn

        layers: list[Any] = []
        width = info.n_features
        for _ in range(params.layers):
            layers += [nn.Linear(width, params.hidden_units), nn.ReLU(), nn.Dropout(params.dropout)]
            width = params.hidden_units
        return nn.Sequential(*layers, nn.Linear(width, len(self.classes)))


@register_family
class TorchCNN(_TorchTrainer):
    """A small convolutional network for square single-channel images given as rows of pixels."""

    name = "torch_cnn"
    Params = CNNParams

    @classmethod
    def unsupported(cls, n_features: int) -> str | None:
        side = math.isqrt(n_features)
        if side * side != n_features or side < 4:
            return (
                f"torch_cnn needs square images as rows of pixels; {n_features} features are not a square of at "
                "least 4×4 (torch_mlp takes any features)"
            )
        return None

    def build(self, params: CNNParams, info: TaskInfo) -> Any:
        from torch import nn

        problem = self.unsupported(info.n_features)
        if problem:
            raise ValueError(problem)
        side = math.isqrt(info.n_features)
        c = params.channels
        pooled = side // 4
        return nn.Sequential(
            nn.Unflatten(1, (1, side, side)),
            nn.Conv2d(1, c, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c, 2 * c, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * c * pooled * pooled, params.hidden_units),
            nn.ReLU(),
            nn.Dropout(params.dropout),
            nn.Linear(params.hidden_units, len(self.classes)),
        )
