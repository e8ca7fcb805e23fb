"""Per-row attributions: how much each feature moved one prediction away from the expected one.

For the linear families (a standardizing step, then a linear model) attributions are exact: feature ``j`` of a
row contributes ``coef_j · (z_j − z̄_j)``, where ``z`` is the standardized row and ``z̄`` the mean of the training
split's standardized rows (0 for a scaler fitted on it). This equals SHAP's linear explainer under feature
independence, and the attributions of a row sum to its decision value minus the expected decision value (the
intercept). The explained output is the model's decision function: the regression value; for a binary
classifier the score of ``classes[1]`` (its log-odds for logistic regression); for more classes the score of the
class the row was predicted as (one-vs-rest).

The PyTorch families (a features step — a bag of words, pixels — then the network) are explained with Captum's
integrated gradients on the network's input features, from an all-zero baseline (an empty document, a black
image) to the row, for the logit of the class the row was predicted as: attributions sum to that logit minus the
baseline's (up to the integral's approximation, reported as ``delta``). A dynamically quantized network has no
gradients: it is explained through a float copy of its dequantized int8 weights. A text row's attributions are its words
(stems) and are returned as the row's strongest terms; an image row's are its pixels (a map).

Any other family has no explainer here yet: :func:`explainer_for` says so in one line rather than guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from perftune.errors import PerftuneError


class NotExplainable(PerftuneError):
    """No explainer exists for this model's family."""


@dataclass
class Attributions:
    feature_names: list[str]
    values: np.ndarray  # rows × features
    base_value: np.ndarray  # per row: the expected output the values start from
    output: np.ndarray  # per row: the explained output (base + sum of values)
    explained: list[str]  # per row: what the output is, e.g. "decision function of class 1"
    method: str = "exact linear attributions: coef × (standardized input − its training mean)"
    extra: dict[str, Any] | None = None  # method-specific fields (e.g. each text row's top terms)

    def to_dict(self) -> dict[str, Any]:
        if self.extra and "top_terms" in self.extra:  # text: a vocabulary-wide row would be thousands of zeros
            return {
                "base_value": self.base_value.tolist(),
                "output": self.output.tolist(),
                "explained": self.explained,
                "method": self.method,
                **self.extra,
            }
        return {
            "feature_names": self.feature_names,
            "attributions": self.values.tolist(),
            "base_value": self.base_value.tolist(),
            "output": self.output.tolist(),
            "explained": self.explained,
            "method": self.method,
            **(self.extra or {}),
        }


class LinearExplainer:
    """Exact attributions of a fitted ``Pipeline([... StandardScaler, linear model])``."""

    def __init__(self, served: Any, feature_names: list[str]) -> None:
        steps = getattr(served, "steps", None)
        model = steps[-1][1] if steps else served
        if not hasattr(model, "coef_") or not hasattr(model, "intercept_"):
            raise NotExplainable(f"{type(model).__name__} is not a linear model; no explainer for it yet")
        self.feature_names = feature_names
        self.prefix = [step for _, step in steps[:-1]] if steps else []
        self.coef = np.atleast_2d(np.asarray(model.coef_, dtype=float))  # classes (or 1) × features
        self.intercept = np.atleast_1d(np.asarray(model.intercept_, dtype=float))
        self.classes = getattr(model, "classes_", None)
        self.z_mean = np.zeros(self.coef.shape[1])  # the scaler was fitted on the training split

    def _standardize(self, X: np.ndarray) -> np.ndarray:
        Z = np.asarray(X, dtype=float)
        for step in self.prefix:
            if hasattr(step, "mean_") and hasattr(step, "scale_"):  # StandardScaler, without its name checks
                Z = (Z - step.mean_) / step.scale_
            else:
                Z = np.asarray(step.transform(Z), dtype=float)
        return Z

    def explain(self, X: np.ndarray) -> Attributions:
        Z = self._standardize(X)
        centered = Z - self.z_mean
        if self.coef.shape[0] == 1:  # regression, or a binary classifier's score of classes[1]
            rows = np.zeros(len(Z), dtype=int)
            label = "prediction" if self.classes is None else f"decision function of class {self.classes[1]}"
            explained = [label] * len(Z)
        else:  # one-vs-rest: the score of each row's predicted class
            rows = np.argmax(Z @ self.coef.T + self.intercept, axis=1)
            explained = [f"decision function of class {self.classes[r]}" for r in rows]
        values = centered * self.coef[rows]
        base = self.intercept[rows] + (self.coef[rows] * self.z_mean).sum(axis=1)  # the expected decision
        return Attributions(self.feature_names, values, base, base + values.sum(axis=1), explained)


class IntegratedGradientsExplainer:
    """Captum's integrated gradients for a ``Pipeline([features step, TorchClassifier])`` (see the module doc).

    ``explain`` takes rows as the server parses them: texts (N×1) or images (N×H·W pixels). For text the full
    vocabulary-wide attributions are summed up as each row's ``top`` terms (strongest first, either sign).
    """

    def __init__(self, served: Any, kind: str, steps: int = 32, top: int = 10) -> None:
        self.features, self.model = served.steps[0][1], served.steps[-1][1]
        self.net, self.quantized = _differentiable(self.model.net)
        self.kind, self.steps, self.top = kind, steps, top
        self.feature_names = list(self.features.feature_names)

    def explain(self, X: np.ndarray) -> Attributions:
        import torch
        from captum.attr import IntegratedGradients

        inputs = torch.from_numpy(np.asarray(self.features.transform(X), dtype=np.float32))
        net = self.net
        net.eval()
        with torch.no_grad():
            logits = net(inputs)
            target = logits.argmax(dim=1)
            baseline = torch.zeros_like(inputs)
            base = net(baseline).gather(1, target[:, None])[:, 0]
        values, delta = IntegratedGradients(net).attribute(
            inputs, baseline, target=target, n_steps=self.steps, return_convergence_delta=True
        )
        values = values.detach().numpy().astype(float)
        output = logits.gather(1, target[:, None])[:, 0].numpy().astype(float)
        classes = self.model.classes_
        explained = [f"logit of class {classes[t]}" for t in target.numpy()]
        extra: dict[str, Any] = {"delta": delta.detach().numpy().astype(float).tolist()}
        names = self.feature_names
        if self.kind == "text":
            order = np.argsort(-np.abs(values), axis=1)[:, : self.top]
            extra["top_terms"] = [
                [[names[j], float(row[j])] for j in idx] for row, idx in zip(values, order, strict=True)
            ]
        method = f"integrated gradients (Captum, {self.steps} steps, zero baseline) on the network's input features"
        if self.quantized:
            method += "; int8 layers explained through their dequantized weights (activations not quantized)"
        return Attributions(names, values, base.numpy().astype(float), output, explained, method, extra)


def _differentiable(net: Any) -> tuple[Any, bool]:
    """``net`` itself, or — for a dynamically quantized one, which has no gradients — a float copy whose Linear
    layers carry the int8 weights dequantized: the served weights exactly, only the activations stay float (the
    served network quantizes them per batch), so attributions describe the served model up to that rounding."""
    from torch import nn

    from perftune.models.torch_estimator import quantized

    if not any(quantized(m) for m in net.modules()):
        return net, False
    if not isinstance(net, nn.Sequential):
        raise NotExplainable("a quantized network that is not a plain layer stack has no explainer yet")
    layers = []
    for layer in net:
        if quantized(layer, dynamic=True) and hasattr(layer, "in_features"):
            weight, bias = layer.weight().dequantize(), layer.bias()
            linear = nn.Linear(layer.in_features, layer.out_features, bias=bias is not None)
            linear.weight.data.copy_(weight)
            if bias is not None:
                linear.bias.data.copy_(bias.detach())
            layers.append(linear)
        elif quantized(layer):
            raise NotExplainable(f"a quantized {type(layer).__name__} layer has no explainer yet")
        else:
            layers.append(layer)
    return nn.Sequential(*layers), True


def explainer_for(served: Any, feature_names: list[str], kind: str = "table") -> Any:
    """The explainer of a fitted serving pipeline (raises :class:`NotExplainable` when there is none)."""
    from perftune.models.torch_estimator import TorchClassifier

    steps = getattr(served, "steps", None)
    if steps and isinstance(steps[-1][1], TorchClassifier):
        if kind not in ("text", "image"):
            raise NotExplainable("a PyTorch model on a table has no explainer yet")
        return IntegratedGradientsExplainer(served, kind)
    return LinearExplainer(served, feature_names)
