"""The report as a person sees it: rendered by headless Chromium, every section present, every image decoded,
no console errors. Chromium comes from Debian (`chromium`; `.ci/run` installs it when absent)."""

from __future__ import annotations

import json
import os
import shutil

import pytest

import perftune
from perftune.report.html import build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
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
constraints: ['train_time_s <= 0.3']
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


def test_report_renders_in_headless_chromium(report_page, tmp_path):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI; `make test` installs it (apt-get install chromium)")
        pytest.skip("needs Debian's chromium (`make test` installs it when run as root)")
    from playwright.sync_api import sync_playwright

    page_path, _ = report_page
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_path.as_uri(), wait_until="load")
        present = page.evaluate("ids => ids.filter(id => document.getElementById(id) !== null)", SECTIONS)
        images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
        best_row = page.inner_text("#best table")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert present == SECTIONS
    assert len(images) >= 3  # learning curves, Pareto, effects
    assert all(complete and width > 0 for _, complete, width in images), images
    assert errors == []
    assert "diabetes" in best_row and "sgd_logistic" in best_row
    assert (tmp_path / "report.png").stat().st_size > 10_000
