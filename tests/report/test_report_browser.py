"""The report as a person sees it: rendered by headless Chromium, every section present, every image decoded,
no console errors. Chromium comes from Debian (`chromium`; `.ci/run` installs it when absent)."""

from __future__ import annotations

import json

import pytest

import perftune
from perftune.report.html import build_report

SECTIONS = ["summary", "best", "datasets", "rq1", "curves", "pareto", "rq2", "spec"]

STUDY = """
name: report
datasets: [diabetes]
models: [sgd_logistic]
search:
  space:
    batch_size: {powers_of_two: {from: 1, until: n_samples}}
    learning_rate: [0.001, 0.01]
    epochs: 10
objectives: [accuracy, train_time_s]
constraints: ['steps <= 600']  # batch sizes 2 and 4 are stopped, on a quiet or a busy machine
"""


@pytest.fixture(scope="module")
def report_page(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    spec = root / "report.yaml"
    spec.write_text(STUDY + f"workspace: {root / 'ws'}\n")
    out = root / "out"
    perftune.tune(spec, out=out)
    return build_report(out), out


def test_report_records_rq1_in_summary_and_files(report_page):
    page, out = report_page
    summary = json.loads((out / "summary.json").read_text())
    importance = summary["effects"]["diabetes/sgd_logistic"]
    assert "train_time_s" in importance and set(importance["train_time_s"]) == {"batch_size", "learning_rate"}
    assert (out / "effects.json").is_file()
    html = page.read_text()
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html  # self-contained


def test_a_second_report_reuses_the_effects_until_the_trials_change(report_page, monkeypatch):
    import perftune.report.html as html

    _, out = report_page
    first = (out / "effects.json").read_text()
    calls = []
    real = html.analyze_groups
    monkeypatch.setattr(html, "analyze_groups", lambda groups, **k: calls.append(sorted(groups)) or real(groups, **k))
    build_report(out)
    assert calls == [] and (out / "effects.json").read_text() == first  # cached: the same numbers, no fANOVA

    summary = json.loads((out / "summary.json").read_text())
    summary["trials"][0]["metrics"]["train_time_s"] *= 2  # a changed trial: its group is analysed again
    (out / "summary.json").write_text(json.dumps(summary))
    build_report(out)
    changed = summary["trials"][0]
    assert calls == [[f"{changed['dataset']}/{changed['model']}"]]


def test_report_renders_in_headless_chromium(report_page, render_page, tmp_path):
    page_path, _ = report_page
    shot = tmp_path / "report.png"
    seen = render_page(page_path, SECTIONS, texts=("#best table",), screenshot=shot)
    assert seen.present == SECTIONS
    assert len(seen.images) >= 3  # learning curves, Pareto, effects
    assert all(complete and width > 0 for _, complete, width in seen.images), seen.images
    assert seen.errors == []
    assert "diabetes" in seen.texts["#best table"] and "sgd_logistic" in seen.texts["#best table"]
    assert shot.stat().st_size > 10_000
