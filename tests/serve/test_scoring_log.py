"""The scoring log never loses a row silently: server keys, refused writes, poison rows, replay, migration, feedback."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from perftune.cli import app as cli_app
from perftune.serve.app import create_app
from perftune.serve.deadletter import DEADLETTER_NAME, DeadLetter
from perftune.serve.feedback import LabelCountError, attach_labels
from perftune.serve.scoring import scoring_engine, spool_dir
from perftune.serve.scoring_writer import ScoringLog

ROWS = [[6, 148, 72, 35, 0, 33.6, 0.627, 50], [1, 85, 66, 29, 0, 26.6, 0.351, 31]]
INFER = "/v2/models/diabetes-clf/infer"


def v2(rows=ROWS, **extra):
    return {"inputs": [{"name": "input-0", "shape": [len(rows), 8], "datatype": "FP64", "data": rows}], **extra}


def count(uri: str, where: str = "1=1") -> int:
    engine = sa.create_engine(uri)
    with engine.connect() as conn:
        n = conn.execute(sa.text(f"select count(*) from perftune_scoring_log where {where}")).scalar_one()
    engine.dispose()
    return n


def refuse_writes(uri: str, when: str = "1") -> None:
    """A database that refuses inserts (an SQLite trigger: IntegrityError, not an OperationalError)."""
    engine = sa.create_engine(uri)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TRIGGER refuse BEFORE INSERT ON perftune_scoring_log"
                f" WHEN {when} BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )
        )
    engine.dispose()


def accept_writes(uri: str) -> None:
    engine = sa.create_engine(uri)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TRIGGER refuse"))
    engine.dispose()


@pytest.fixture
def uri(tmp_path):
    uri = f"sqlite:///{tmp_path / 'scoring.db'}"
    scoring_engine(uri).dispose()  # the tables, so that a trigger can be added before the server starts
    return uri


def log_rows(scoring: ScoringLog, n: int, client_id: str | None = None) -> None:
    for i in range(n):
        X = np.asarray([ROWS[0]])
        scoring.log(f"key-{client_id}-{i}", client_id, "m", "1", "v2", X, np.asarray([1]), 0.1)


def test_a_reused_client_id_is_logged_twice_under_two_server_keys_and_the_writer_goes_on(registered, uri):
    with TestClient(create_app(registered.settings(scoring_uri=uri))) as client:
        first = client.post(INFER, json=v2(id="same"))
        second = client.post(INFER, json=v2(id="same"))
        others = [client.post(INFER, json=v2()) for _ in range(5)]
        assert {r.status_code for r in (first, second, *others)} == {200}
        assert first.json()["id"] == second.json()["id"] == "same"  # the protocol echoes the client's id
        assert first.headers["X-Request-Id"] != second.headers["X-Request-Id"]
        assert client.app.state.server.scoring._thread.is_alive()
    assert count(uri) == 7
    assert count(uri, "client_id = 'same'") == 2
    assert count(uri, "client_id is null") == 5


@pytest.mark.parametrize(
    ("request_id", "why"),
    [("dätä-✓", "printable ASCII"), ("a\r\nX-Injected: 1", "printable ASCII"), ("x" * 129, "1 to 128"), ("", "1 to")],
)
def test_an_id_that_cannot_be_echoed_safely_is_a_422_not_counted_as_200_nor_logged(registered, uri, request_id, why):
    with TestClient(create_app(registered.settings(scoring_uri=uri))) as client:
        response = client.post(INFER, json=v2(id=request_id))
        assert response.status_code == 422 and why in response.json()["error"]
        assert "\n" not in response.json()["error"]
        metrics = client.get("/metrics").text
    assert 'code="422",endpoint="v2"' in metrics and 'code="200",endpoint="v2"' not in metrics
    assert count(uri) == 0


def test_a_refused_batch_goes_to_the_dead_letter_file_and_is_replayed_when_the_database_takes_writes(tmp_path, uri):
    failures = []
    refuse_writes(uri)
    scoring = ScoringLog(uri, tmp_path, on_failure=failures.append, interval_s=0.05, backoff_s=0.01, cooldown_s=0)
    log_rows(scoring, 20)
    scoring.flush()
    assert sum(failures) == 20 and count(uri) == 0
    waiting = DeadLetter(tmp_path / DEADLETTER_NAME).rows()  # under its lock: the writer may be replaying it
    assert len(waiting) == 20 and waiting[0]["request_id"] == "key-None-0"
    assert scoring._thread.is_alive()
    accept_writes(uri)
    log_rows(scoring, 5, client_id="after")
    scoring.close()  # the next batch succeeds; the dead letters are replayed (at the latest on close)
    assert count(uri) == 25
    assert DeadLetter(tmp_path / DEADLETTER_NAME).rows() == []


def test_one_poison_row_does_not_take_its_batch_down(tmp_path, uri):
    failures = []
    refuse_writes(uri, when="NEW.client_id = 'poison'")
    spool = spool_dir(uri, tmp_path)  # where `perftune scoring replay` looks for this database's rows
    scoring = ScoringLog(uri, spool, on_failure=failures.append, backoff_s=0.01)
    log_rows(scoring, 9, client_id="good")
    log_rows(scoring, 1, client_id="poison")
    scoring.close()
    assert count(uri) == 9 and failures == [1]
    (poison,) = DeadLetter(spool / DEADLETTER_NAME).rows()
    assert poison["client_id"] == "poison"
    accept_writes(uri)
    runner = CliRunner()
    replay = ["scoring", "replay", "--scoring-uri", uri, "--workspace", str(tmp_path)]
    result = runner.invoke(cli_app, replay)
    assert result.exit_code == 0 and "1 rows new" in result.output, result.output
    result = runner.invoke(cli_app, replay)  # idempotent: the replayed file is gone, nothing is written twice
    assert result.exit_code == 0 and "nothing to replay" in result.output, result.output
    assert count(uri) == 10


def test_replay_with_nothing_to_replay_creates_no_database(tmp_path):
    uri = f"sqlite:///{tmp_path / 'fresh' / 'scoring.db'}"
    result = CliRunner().invoke(cli_app, ["scoring", "replay", "--scoring-uri", uri, "--workspace", str(tmp_path)])
    assert result.exit_code == 0 and "nothing to replay" in result.output, result.output
    assert not (tmp_path / "fresh").exists()


def test_any_exception_is_retried_then_dead_lettered_and_the_thread_survives(tmp_path, uri, monkeypatch, caplog):
    import perftune.serve.scoring_writer as writer

    def broken(engine, rows):
        raise KeyError("not a database error at all")

    monkeypatch.setattr(writer, "insert_rows", broken)
    scoring = ScoringLog(uri, tmp_path, backoff_s=0.01, interval_s=0.05)
    log_rows(scoring, 3)
    with caplog.at_level(logging.ERROR, logger="perftune.serve"):
        scoring.flush()
        assert scoring.dead_lettered == 3 and scoring._thread.is_alive()
        monkeypatch.undo()
        scoring.close()
    assert any(str(tmp_path / DEADLETTER_NAME) in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert count(uri) == 3  # replayed at close, once the database takes writes again


def test_a_shutdown_that_cannot_drain_says_how_many_rows_went_to_the_dead_letter_file(tmp_path, uri, caplog):
    refuse_writes(uri)
    scoring = ScoringLog(uri, tmp_path, backoff_s=0.01, interval_s=60)
    log_rows(scoring, 7)
    with caplog.at_level(logging.ERROR, logger="perftune.serve"):
        scoring.close()
    assert any("shutdown could not drain 7 rows" in r.getMessage() for r in caplog.records)
    assert len(DeadLetter(tmp_path / DEADLETTER_NAME).rows()) == 7


def test_rows_that_reach_neither_the_database_nor_the_dead_letter_file_are_named_at_critical_level(
    tmp_path, uri, caplog
):
    refuse_writes(uri)
    (tmp_path / DEADLETTER_NAME).mkdir()  # the dead-letter "file" cannot be written either
    failures = []
    scoring = ScoringLog(uri, tmp_path, on_failure=failures.append, backoff_s=0.01, interval_s=60)
    log_rows(scoring, 2)
    with caplog.at_level(logging.ERROR, logger="perftune.serve"):
        scoring.close()
    critical = [r.getMessage() for r in caplog.records if r.levelname == "CRITICAL"]
    assert critical and "key-None-0" in critical[0] and "key-None-1" in critical[0]
    assert failures == [2] and scoring.lost == 2


def test_a_scoring_database_of_the_previous_schema_is_migrated_in_place(registered, tmp_path):
    uri = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(uri)
    with engine.begin() as conn:  # the schema before client_id, with a re-sent feedback row
        conn.execute(
            sa.text(
                "CREATE TABLE perftune_scoring_log (id INTEGER PRIMARY KEY, request_id VARCHAR(64) NOT NULL UNIQUE,"
                " at DATETIME NOT NULL, model VARCHAR(256) NOT NULL, version VARCHAR(32) NOT NULL, endpoint"
                " VARCHAR(32) NOT NULL, rows INTEGER NOT NULL, inputs TEXT NOT NULL, outputs TEXT NOT NULL,"
                " latency_ms FLOAT NOT NULL)"
            )
        )
        conn.execute(
            sa.text(
                "CREATE TABLE perftune_feedback (id INTEGER PRIMARY KEY, request_id VARCHAR(64) NOT NULL,"
                " model VARCHAR(256) NOT NULL, at DATETIME NOT NULL, labels TEXT NOT NULL)"
            )
        )
        conn.execute(sa.text("CREATE INDEX ix_perftune_feedback_request_id ON perftune_feedback (request_id)"))
        conn.execute(
            sa.text(
                "INSERT INTO perftune_scoring_log VALUES (1, 'old-1', '2024-01-01 00:00:00', 'diabetes-clf', '1',"
                " 'v2', 1, '[[1,2,3,4,5,6,7,8]]', '[1]', 0.5)"
            )
        )
        for labels in ("[0]", "[1]"):
            conn.execute(
                sa.text(
                    f"INSERT INTO perftune_feedback (request_id, model, at, labels) VALUES ('old-1', 'diabetes-clf',"
                    f" '2024-01-01 00:00:00', '{labels}')"
                )
            )
    engine.dispose()
    with TestClient(create_app(registered.settings(scoring_uri=uri))) as client:
        assert client.post(INFER, json=v2(id="new")).status_code == 200
        items = {"items": [{"request_id": "old-1", "labels": [1]}]}
        relabel = client.post("/v2/models/diabetes-clf/feedback", json=items)
        assert relabel.json()["stored"] == 1 and relabel.json()["replaced"] == 1
    assert count(uri) == 2 and count(uri, "client_id = 'new'") == 1
    assert count(uri, "cpu_wait_ms IS NULL") == 1 and count(uri, "client_id = 'new' AND cpu_wait_ms >= 0") == 1
    engine = sa.create_engine(uri)
    with engine.connect() as conn:
        assert conn.execute(sa.text("select labels from perftune_feedback")).scalars().all() == ["[1]"]
    engine.dispose()


def test_feedback_checks_the_label_count_and_re_sending_replaces_instead_of_duplicating(registered, uri):
    with TestClient(create_app(registered.settings(scoring_uri=uri))) as client:
        older = client.post(INFER, json=v2(ROWS[:1], id="reused")).headers["X-Request-Id"]
        newer = client.post(INFER, json=v2(ROWS, id="reused")).headers["X-Request-Id"]
        too_many = client.post(
            "/v2/models/diabetes-clf/feedback", json={"items": [{"request_id": newer, "labels": [1, 0, 1]}]}
        )
        assert too_many.status_code == 422
        assert too_many.json()["error"].startswith(f"request '{newer}': 3 labels for 2 rows")
        by_client = {"items": [{"request_id": "reused", "labels": [1, 2]}]}
        for _ in range(2):  # re-sent: still one feedback row
            answer = client.post("/v2/models/diabetes-clf/feedback", json=by_client).json()
        assert answer["matched"] == [{"id": "reused", "request_id": newer, "by": "client_id", "candidates": 2}]
        assert answer["replaced"] == 1 and "most recent" in answer["rule"]
        by_key = client.post("/v2/models/diabetes-clf/feedback", json={"items": [{"request_id": older, "labels": 1}]})
        assert by_key.json()["matched"][0]["by"] == "request_id"
        unknown_class = {"items": [{"request_id": older, "labels": [0]}]}  # diabetes' classes are 1 and 2
        refused = client.post("/v2/models/diabetes-clf/feedback", json=unknown_class)
        assert refused.status_code == 422 and "label 0 is not one of the model's classes (1, 2)" in refused.text
    engine = scoring_engine(uri)
    with pytest.raises(LabelCountError, match=r"request 'reused': 1 labels for 2 rows; send exactly one label"):
        attach_labels(engine, "diabetes-clf", [("reused", [1])])
    with engine.connect() as conn:
        stored = dict(conn.execute(sa.text("select request_id, labels from perftune_feedback")).all())
    engine.dispose()
    assert stored == {newer: "[1,2]", older: "[1]"}


def test_feedback_cli_refuses_more_labels_than_rows_and_is_idempotent(registered, uri, tmp_path):
    with TestClient(create_app(registered.settings(scoring_uri=uri))) as client:
        key = client.post(INFER, json=v2(ROWS[:1])).headers["X-Request-Id"]
    labels = tmp_path / "labels.csv"
    labels.write_text(f"request_id,label\n{key},1\n{key},0\n")
    runner = CliRunner()
    command = ["feedback", str(labels), "--model", "diabetes-clf", "--scoring-uri", uri]
    refused = runner.invoke(cli_app, command)
    assert refused.exit_code == 2 and f"request '{key}': 2 labels for 1 rows" in refused.output
    labels.write_text(f"request_id,label\n{key},1\n")
    assert runner.invoke(cli_app, command).exit_code == 0
    again = runner.invoke(cli_app, command)
    assert again.exit_code == 0 and "1 replaced earlier labels" in again.output
    engine = sa.create_engine(uri)
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from perftune_feedback")).scalar_one() == 1
    engine.dispose()


def test_csv_without_a_header_and_a_json_depth_error_say_only_what_applies(registered, uri):
    with TestClient(create_app(registered.settings(scoring_uri=uri))) as client:
        headless = client.post(
            "/invocations",
            content="6,148.5,72,35,0,33.6,0.627,50\n1,85,66,29,0,26.6,0.351,31\n",
            headers={"Content-Type": "text/csv"},
        )
        assert headless.status_code == 422 and "must be a header" in headless.json()["error"]
        assert "148.5" not in headless.text and "33.6" not in headless.text
        deep = client.post("/invocations", content=b"[" * 2000 + b"]" * 2000)
        assert deep.status_code == 400 and "depth" in deep.json()["error"] and "finite" not in deep.json()["error"]
        nan = client.post("/invocations", content=b'{"instances": [[NaN, 1, 2, 3, 4, 5, 6, 7]]}')
        assert nan.status_code == 400 and "numbers must be finite" in nan.json()["error"]
    assert count(uri) == 0
