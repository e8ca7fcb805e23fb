"""``perftune explain --html``: one self-contained page — global importance and the rows' attributions."""

from __future__ import annotations

from html import escape
from pathlib import Path

import numpy as np

from perftune.explain.version import Explanation
from perftune.report.page import CSS, img, png, table


def _importance_chart(explanation: Explanation) -> bytes:
    from matplotlib.figure import Figure

    features = explanation.shown_importance[::-1]  # most important at the top
    fig = Figure(figsize=(7, 0.35 * len(features) + 1))
    ax = fig.add_subplot(1, 1, 1)
    permutation = explanation.method.measure == "score drop"
    spread = [f.std for f in features] if permutation else None  # |attributions| are skewed: their spread is listed
    ax.barh([f.feature for f in features], [f.mean for f in features], xerr=spread, color="#1f77b4")
    ax.set_xlabel("drop of the test metric when the feature is shuffled" if permutation else explanation.method.measure)
    fig.tight_layout()
    return png(fig)


def _pixel_maps(maps: list[np.ndarray], titles: list[str], cmap: str, symmetric: bool) -> bytes:
    """Attribution maps over the image's pixels, side by side."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.9 * len(maps) + 0.6, 2.3))
    for i, (values, title) in enumerate(zip(maps, titles, strict=True)):
        ax = fig.add_subplot(1, len(maps), i + 1)
        limit = float(np.max(np.abs(values))) or 1.0
        ax.imshow(values, cmap=cmap, vmin=-limit if symmetric else 0.0, vmax=limit)
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return png(fig)


def _as_image(names: list[str], values: dict[str, float] | np.ndarray) -> np.ndarray:
    """Values of the ``px_<row>_<col>`` features as an image."""
    cells = [tuple(int(v) for v in name.split("_")[1:]) for name in names]
    height, width = max(r for r, _ in cells) + 1, max(c for _, c in cells) + 1
    image = np.zeros((height, width))
    for j, (r, c) in enumerate(cells):
        image[r, c] = values[names[j]] if isinstance(values, dict) else values[j]
    return image


def _rows_section(explanation: Explanation) -> str:
    """Per-row attributions: every column of a table; a text's or an image's strongest features (and an image's
    map)."""
    a = explanation.attributions
    assert a is not None
    intro = (
        f"<p>{escape(explanation.rows_note)}; explained output: {escape(a.explained[0])}. Each row's attributions "
        f"sum to its output minus the base value ({escape(a.method)}).</p>"
    )
    if explanation.inputs == "table":
        return (
            intro + img(_attribution_chart(explanation), "attributions per row and feature")
            + table(["row", "base", *a.feature_names, "output"],
                    [[i, float(a.base_value[i]), *map(float, a.values[i]), float(a.output[i])]
                     for i in range(len(a.output))])
        )  # fmt: skip
    maps = ""
    if explanation.inputs == "image":
        shown = range(min(len(a.output), 8))
        maps = img(
            _pixel_maps([_as_image(a.feature_names, a.values[i]) for i in shown],
                        [f"row {i}: {a.explained[i].removeprefix('logit of ')}" for i in shown], "RdBu_r", True),
            "attribution map of each row (red raises the explained logit, blue lowers it)",
        )  # fmt: skip
    strongest = [
        [i, a.explained[i], float(a.base_value[i]), float(a.output[i]),
         ", ".join(f"{name} {value:+.3f}" for name, value in explanation.strongest(i, 8))]
        for i in range(len(a.output))
    ]  # fmt: skip
    return intro + maps + table(["row", "explained", "base", "output", "strongest features"], strongest)


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
    method = explanation.method
    importance = table(
        ["feature", method.measure, "± std"], [[f.feature, f.mean, f.std] for f in explanation.shown_importance]
    )
    if explanation.inputs == "image":  # where on the image the model looks, over the test rows
        mean = {f.feature: f.mean for f in explanation.importance}
        names = sorted(mean, key=lambda n: tuple(int(v) for v in n.split("_")[1:]))
        importance = img(_pixel_maps([_as_image(names, mean)], [method.measure], "viridis", False),
                         "mean absolute attribution of each pixel") + importance  # fmt: skip
    rows = f"<p>{escape(explanation.rows_note)}</p>" if explanation.attributions is None else _rows_section(explanation)
    title = f"{escape(explanation.name)} v{escape(explanation.version)}"
    html = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>perftune explain: {title}</title>
<style>{CSS}</style></head><body><h1>Explain: {title}</h1>
<section id="importance"><h2>Global importance: {escape(method.description)}</h2>
{img(_importance_chart(explanation), method.description)}{importance}</section>
<section id="rows"><h2>Per-row attributions</h2>{rows}</section></body></html>"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html)
    return path
