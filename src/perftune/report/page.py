"""What every perftune HTML page shares: the stylesheet, tables, inline PNG images (nothing fetched)."""

from __future__ import annotations

import base64
import io
from html import escape
from typing import Any

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1280px;color:#222}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.88rem}td,th{border:1px solid #ccc;padding:.25rem .5rem}
th{background:#f3f3f3;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f7f7f7;padding:.8rem;overflow:auto;font-size:.82rem}img{max-width:100%;display:block;margin:.5rem 0}
.muted{color:#777}.bad{color:#b00}.good{color:#070}
"""


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return escape(str(value))


def table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{fmt(c)}</td>' if isinstance(c, (int, float)) else f"<td>{fmt(c)}</td>" for c in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def png(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes (the figure is left to the caller to close).

    Figures lay themselves out (fixed margins); ``bbox_inches="tight"`` or a constrained layout would draw each
    one again to measure it, and take most of a report's time.
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def img(data: bytes, alt: str, attributes: str = "") -> str:
    """An <img> with the PNG inline as a data URI."""
    encoded = base64.b64encode(data).decode()
    return f'<img alt="{escape(alt)}"{attributes} src="data:image/png;base64,{encoded}">'
