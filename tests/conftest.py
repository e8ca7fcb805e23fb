"""Shared fixtures: the offline datasets, a Ray session shared by the study tests, spec builders, a registered
model to serve (a small study on diabetes, two versions, v1 champion) and the live-server helpers.

Tests are not a package (``--import-mode=importlib``): helper modules are loaded from their files (``live``)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "datasets").resolve()


def pytest_configure(config: pytest.Config) -> None:
    # Tests read the offline copies only; the environment may point elsewhere (e.g. the Makefile's default).
    os.environ.setdefault("PERFTUNE_DATA_DIR", str(SHARED_DATA))
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for all in-process study tests (perftune joins a running Ray instead of starting one)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def write_spec(tmp_path: Path):
    """Write a spec YAML into a temporary workspace and return its path."""

    def write(body: str, name: str = "study") -> Path:
        path = tmp_path / f"{name}.yaml"
        text = textwrap.dedent(body)
        if "workspace:" not in text:
            text += f"\nworkspace: {tmp_path / 'ws'}\n"
        path.write_text(text)
        return path

    return write


POSTGRES = os.environ.get("PERFTUNE_TEST_POSTGRES", "postgresql://127.0.0.1:5432/test")


@contextlib.contextmanager
def _fresh_database() -> Iterator[str]:
    """A new PostgreSQL database, dropped afterwards.

    The server is part of the test environment (`.ci/run` starts it): when it is unreachable the tests that
    need it fail, they do not skip.
    """
    import uuid

    import psycopg

    try:
        admin = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL at {POSTGRES} is unreachable ({exc}); start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` or set PERFTUNE_TEST_POSTGRES"
        )
    database = f"perftune_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{database}"')
    base = POSTGRES.rsplit("/", 1)[0]
    try:
        yield f"{base}/{database}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def postgres_uri():
    """A PostgreSQL database shared by this test run's tests (tables made by one test are seen by others)."""
    with _fresh_database() as uri:
        yield uri


@pytest.fixture
def fresh_postgres_uri():
    """A PostgreSQL database of this test's own."""
    with _fresh_database() as uri:
        yield uri


# ------------------------------------------------------------------------------------------ serving

SERVE_STUDY = """
name: serve
datasets: [diabetes]
models: [sgd_logistic]
search:
  space:
    batch_size: [32, 64]
    learning_rate: [0.01]
    epochs: 5
objectives: [accuracy]
"""
TOKEN = "s3cret-token-for-tests-0123456789"


class Registered:
    def __init__(self, root: Path, uri: str, trials: list[str]) -> None:
        self.root, self.uri, self.trials = root, uri, trials

    def settings(self, reference: str = "diabetes-clf@champion", **overrides):  # -> ServeSettings
        from perftune.serve.settings import ServeSettings

        values = {
            "reference": reference,
            "tracking_uri": self.uri,
            "scoring_uri": f"sqlite:///{self.root / 'scoring.db'}",
            **overrides,
        }
        return ServeSettings(**values)


@pytest.fixture(scope="session")
def champion_from_study(ray_session):
    """``champion_from_study(root, study, name)``: tune ``study`` in ``root``, register its best trial as ``name``
    v1 and promote it; returns the tracking URI."""
    return _champion_from_study


def _champion_from_study(root: Path, study: str, name: str) -> str:
    import perftune
    from perftune.registry.catalog import ModelRegistry
    from perftune.registry.register import register

    spec = root / "study.yaml"
    spec.write_text(study + f"workspace: {root / 'ws'}\n")
    result = perftune.tune(spec, out=root / "out")
    register(root / "out", name)
    registry = ModelRegistry(result.tracking["uri"])
    registry.promote(name, "1", reason="first champion")
    registry.close()
    return result.tracking["uri"]


@pytest.fixture(scope="session")
def registered(ray_session, tmp_path_factory) -> Registered:
    import perftune
    from perftune.registry.catalog import ModelRegistry
    from perftune.registry.register import register

    root = tmp_path_factory.mktemp("serve")
    spec = root / "serve.yaml"
    spec.write_text(SERVE_STUDY + f"workspace: {root / 'ws'}\n")
    result = perftune.tune(spec, out=root / "out")
    trials = sorted(t.trial_id for g in result.groups for t in g.trials)
    register(root / "out", "diabetes-clf", trial_id=trials[0])
    register(root / "out", "diabetes-clf", trial_id=trials[1])
    registry = ModelRegistry(result.tracking["uri"])
    registry.promote("diabetes-clf", "1", reason="tests")
    registry.close()
    (root / "token.txt").write_text(TOKEN + "\n")
    return Registered(root, result.tracking["uri"], trials)


@pytest.fixture(scope="session")
def live() -> ModuleType:
    """``tests/serve/test_live.py``: ``server(registered, *args)`` starts ``perftune serve``; ``Load`` posts."""
    key = "perftune_tests_serve_test_live"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, REPO / "tests" / "serve" / "test_live.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


# ------------------------------------------------------------------------------------------ browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Rendered:
    """A page as headless Chromium rendered it."""

    present: list[str]  # the asked-for element ids that exist
    images: list[list]  # [alt, complete, naturalWidth] per <img>
    errors: list[str]  # console errors and page errors
    texts: dict[str, str]  # inner text of the asked-for selectors


@pytest.fixture(scope="session")
def render_page():
    """``render_page(path, ids, texts=(), screenshot=None)``: open a local HTML file in headless Chromium (Debian's
    ``chromium``; `.ci/run` installs it) and report what a person would see."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI; `make test` installs it (apt-get install chromium)")
        pytest.skip("needs Debian's chromium (`make test` installs it when run as root)")
    from playwright.sync_api import sync_playwright

    def render(path: Path, ids: list[str], texts: tuple[str, ...] = (), screenshot: Path | None = None) -> Rendered:
        errors: list[str] = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM,
                headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
            )  # fmt: skip
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(path.as_uri(), wait_until="load")
            present = page.evaluate("ids => ids.filter(id => document.getElementById(id) !== null)", ids)
            images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
            inner = {selector: page.inner_text(selector) for selector in texts}
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=True)
            browser.close()
        return Rendered(present, images, errors, inner)

    return render
