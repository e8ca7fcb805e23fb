"""``perftune explain --html``: one self-contained page — global importance and the rows' attributions."""

from __future__ import annotations

from html import escape
from pathlib import Path

import numpy as np

from perftune.explain.version import Explanation
from perftune.report.page import CSS, img, png, table


def _importance_chart(explanation: Explanation) -> bytes:
    from matplotlib.figure import Figure

    features = explanation.importance[::-1]  # most important at the top
    fig = Figure(figsize=(7, 0.35 * len(features) + 1))
    ax = fig.add_subplot(1, 1, 1)
    ax.barh([f.feature for f in features], [f.mean for f in features], xerr=[f.std for f in features],
            color="#1f77b4")  # fmt: skip
    ax.set_xlabel("drop of the test metric when the feature is shuffled")
    fig.tight_layout()
    return png(fig)


def _attribution_chart(explanation: Explanation) -> bytes:
    from matplotlib.figure import Figure

    a = explanation.attributions
    assert a is not None
    shown = min(len(a.output), 20)
    fig = Figure(figsize=(7, 0.3 * shown + 1.5))
    ax = fig.add_subplot(1, 1, 1)
    limit = float(np.max(np.abs(a.values[:shown]))) or 1.0
    image = ax.imshow(a.values[:shown], cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(a.feature_names)), a.feature_names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("row")
    fig.colorbar(image, ax=ax, label="attribution")
    fig.tight_layout()
    return png(fig)


def write_page(explanation: Explanation, path: Path) -> Path:
    importance = table(["feature", "score drop", "± std"], [[f.feature, f.mean, f.std] for f in explanation.importance])
    a = explanation.attributions
    if a is None:
        rows = f"<p>{escape(explanation.rows_note)}</p>"
    else:
        rows = (
            f"<p>{escape(explanation.rows_note)}; explained output: {escape(a.explained[0])}. Each row's attributions "
            "sum to its output minus the base value.</p>"
            + img(_attribution_chart(explanation), "attributions per row and feature")
            + table(["row", "base", *a.feature_names, "output"],
                    [[i, float(a.base_value[i]), *map(float, a.values[i]), float(a.output[i])]
                     for i in range(len(a.output))])
        )  # fmt: skip
    title = f"{escape(explanation.name)} v{escape(explanation.version)}"
    html = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>perftune explain: {title}</title>
<style>{CSS}</style></head><body><h1>Explain: {title}</h1>
<section id="importance"><h2>Global importance (permutation, held-out test split)</h2>
{img(_importance_chart(explanation), "permutation importance")}{importance}</section>
<section id="rows"><h2>Per-row attributions</h2>{rows}</section></body></html>"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html)
    return path
