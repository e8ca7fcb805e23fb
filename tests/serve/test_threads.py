"""perftune serve --threads: the setting, its default (cores ÷ workers), the pin in each worker before its model
loads, the line that says when the version was measured with another setting, and the metadata that shows it."""

from __future__ import annotations

import logging
import os

import httpx
import pytest
import threadpoolctl
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from perftune.cli import app
from perftune.errors import UsageError
from perftune.measure.threads import THREADS_TAG
from perftune.serve.app import create_app
from perftune.serve.server import Server
from perftune.serve.settings import ServeSettings
from perftune.track.uri import mlflow_store

CORES = len(os.sched_getaffinity(0))


def settings(**values) -> ServeSettings:
    return ServeSettings.build(reference="m@champion", tracking_uri="sqlite:///x.db", **values)


def test_threads_are_left_to_the_server_unless_given():
    assert settings().threads is None  # resolved from the version the server starts with
    assert settings(threads=3, workers=2).threads == 3  # given: kept, whatever the workers


def test_workers_receive_the_thread_count_the_parent_resolved():
    given = settings(workers=2).model_copy(update={"threads": 1})  # as run_server passes it on
    assert ServeSettings.model_validate_json(given.model_dump_json()).threads == 1


BAD_THREADS = [
    (0, "--threads 0: input should be greater than or equal to 1"),
    (-2, "--threads -2: input should be greater than or equal to 1"),
    (5000, "--threads 5000: input should be less than or equal"),
]


@pytest.mark.parametrize(("value", "message"), BAD_THREADS)
def test_a_bad_thread_count_is_a_usage_error_naming_the_option(value, message):
    with pytest.raises(UsageError, match=message):
        settings(threads=value)


@pytest.mark.parametrize(("value", "message"), [("0", "--threads 0: input should be greater than or equal to 1"),
                                                ("many", "Invalid value for '--threads'")])  # fmt: skip
def test_the_serve_command_checks_threads_before_it_loads_anything(registered, value, message):
    result = CliRunner().invoke(
        app, ["serve", "diabetes-clf@champion", "--threads", value, "--tracking-uri", registered.uri],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "serving" not in result.output


def pools() -> set[int]:
    return {info["num_threads"] for info in threadpoolctl.threadpool_info()}


def test_a_server_pins_its_runtimes_while_it_serves_and_restores_them_when_it_closes(registered):
    import torch  # loaded before the server: a PyTorch model's process has it

    before, torch_before = pools(), torch.get_num_threads()
    server = Server(registered.settings(threads=3, scoring_uri=None))
    try:
        assert pools() == {3} and torch.get_num_threads() == 3
        assert server.model.threads == 3
    finally:
        server.close()
    assert pools() == before and torch.get_num_threads() == torch_before


@pytest.fixture
def measured_with(registered):
    """``measured_with(threads)``: diabetes-clf v2 tagged as measured with ``threads``, or without the tag for None
    (a version registered before perftune recorded it); after the test v2 has the tag registration gave it again."""
    from mlflow import MlflowClient

    client = MlflowClient(registered.uri)
    with mlflow_store(registered.uri):
        registered_with = client.get_model_version("diabetes-clf", "2").tags[THREADS_TAG]

    def tag(threads: int | None) -> str:
        with mlflow_store(registered.uri):
            if threads is None:
                client.delete_model_version_tag("diabetes-clf", "2", THREADS_TAG)
            else:
                client.set_model_version_tag("diabetes-clf", "2", THREADS_TAG, str(threads))
        return "diabetes-clf/2"

    yield tag
    with mlflow_store(registered.uri):
        client.set_model_version_tag("diabetes-clf", "2", THREADS_TAG, registered_with)


def served_threads(registered, reference: str, **values) -> int:
    server = Server(registered.settings(reference, scoring_uri=None, **values))
    server.close()
    return server.threads


def test_by_default_a_server_runs_on_the_threads_its_version_was_measured_with_at_most_cores_per_worker(
    registered, measured_with
):
    assert served_threads(registered, "diabetes-clf/1") == 1  # registered by a study of 1 CPU per trial
    assert served_threads(registered, measured_with(None)) == 1  # no tag: older registrations measured on 1 thread
    assert served_threads(registered, measured_with(1)) == 1
    assert served_threads(registered, measured_with(CORES)) == CORES
    assert served_threads(registered, measured_with(CORES + 3)) == CORES  # never more than the cores
    assert served_threads(registered, measured_with(CORES), workers=CORES) == 1  # shared between the workers
    assert served_threads(registered, measured_with(1), threads=CORES + 1) == CORES + 1  # --threads decides


def test_serving_on_another_setting_than_the_version_was_measured_with_says_so_in_one_line(
    registered, measured_with, caplog
):
    reference = measured_with(1)
    caplog.set_level(logging.INFO, logger="perftune.serve")
    with TestClient(create_app(registered.settings(reference, threads=2, scoring_uri=None))) as client:
        meta = client.get("/v2/models/diabetes-clf").json()
    assert meta["parameters"]["threads"] == 2 and meta["parameters"]["measured_threads"] == 1
    said = [r.getMessage() for r in caplog.records if "was measured with" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("serving with 2 threads; v2 was measured with 1 thread ")

    caplog.clear()
    with TestClient(create_app(registered.settings(reference, threads=1, scoring_uri=None))) as client:
        assert client.get("/v2/models/diabetes-clf").json()["parameters"]["threads"] == 1
    assert not [r for r in caplog.records if "was measured with" in r.getMessage()]


def test_a_version_without_the_tag_is_served_without_a_note(registered, measured_with, caplog):
    reference = measured_with(None)
    caplog.set_level(logging.INFO, logger="perftune.serve")
    with TestClient(create_app(registered.settings(reference, threads=2, scoring_uri=None))) as client:
        meta = client.get("/v2/models/diabetes-clf").json()
    assert meta["parameters"]["threads"] == 2 and meta["parameters"]["measured_threads"] is None
    assert not [r for r in caplog.records if "was measured with" in r.getMessage()]


@pytest.mark.parametrize("threads", [[], ["--threads", "3"]])
def test_every_worker_of_a_real_server_serves_on_the_threads_it_announced(registered, live, tmp_path, threads):
    log = tmp_path / "serve.log"
    with live.server(registered, "diabetes-clf@champion", "--workers", "2", *threads, log_file=log) as (_, url):
        seen = {httpx.get(f"{url}/v2/models/diabetes-clf", timeout=30).json()["parameters"]["threads"]
                for _ in range(20)}  # fmt: skip
    expected = int(threads[1]) if threads else 1  # v1 was measured with 1 thread (its tag)
    assert seen == {expected}
