"""The journal of lifecycle operations on both backends: steps, settling once, who counts as gone, claims."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from perftune.registry.audit import AuditLog, audit_table, lock_table
from perftune.registry.journal import LEASE, Journal, OperationState, operations_table


@pytest.fixture(params=["sqlite", "postgresql"])
def uri(request, tmp_path) -> str:
    if request.param == "postgresql":
        return request.getfixturevalue("fresh_postgres_uri")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def journal(uri):
    audit = AuditLog(uri)
    yield Journal(audit.engine)
    audit.close()


def test_an_operation_records_its_steps_and_a_list_extends_the_recorded_one(journal):
    op = journal.begin("register", "clf", {"experiments": ["1"], "trial": "t0"})
    journal.step(op, "run created", run_id="abc", runs=[{"experiment": "e", "tag": ["k", "v"]}])
    journal.step(op, "version registered", version="3", runs=[{"experiment": "f", "tag": ["k", "w"]}])
    found = journal.get(op)
    assert found.state == OperationState.RUNNING and found.step == "version registered"
    assert found.details == {
        "experiments": ["1"], "trial": "t0", "run_id": "abc", "version": "3",
        "runs": [{"experiment": "e", "tag": ["k", "v"]}, {"experiment": "f", "tag": ["k", "w"]}],
    }  # fmt: skip
    assert [o.id for o in journal.unsettled("clf")] == [op] and journal.unsettled("other") == []
    assert journal.gone() == []  # this process runs it
    assert journal.finish(op) and not journal.finish(op, OperationState.INTERRUPTED)  # settled once
    assert journal.get(op).state == OperationState.FINISHED and journal.unsettled() == []


def test_an_operation_settles_with_the_transaction_of_its_audit_row(journal):
    op = journal.begin("promote", "clf")
    with pytest.raises(RuntimeError), journal.engine.begin() as conn:
        assert journal.finish(op, conn=conn)
        raise RuntimeError("the audit row's transaction rolls back")
    assert journal.get(op).state == OperationState.RUNNING
    with journal.engine.begin() as conn:
        journal.finish(op, conn=conn)
    assert journal.get(op).state == OperationState.FINISHED


def test_the_operation_of_a_process_that_died_is_gone_and_claimed_by_one_recovery_only(journal, uri):
    code = (
        "import sys; from perftune.registry.audit import AuditLog; from perftune.registry.journal import Journal; "
        "print(Journal(AuditLog(sys.argv[1]).engine).begin('register', 'clf', {}))"
    )
    done = subprocess.run([sys.executable, "-c", code, uri], capture_output=True, text=True, check=True)
    dead = int(done.stdout.strip())
    mine = journal.begin("promote", "clf")
    gone = journal.gone()
    assert [o.id for o in gone] == [dead]
    assert journal.claim(gone[0]) and not journal.claim(gone[0])  # the second claimer finds a new owner
    assert journal.gone() == []  # claimed: this process settles it now
    assert {o.id for o in journal.unsettled()} == {dead, mine}


def test_an_operation_that_raised_is_abandoned_with_its_error_and_left_for_recovery(journal):
    with pytest.raises(ValueError), journal.operation("retrain", "clf", {"champion": "1"}) as op:
        raise ValueError("the study\nfailed")
    found = journal.get(op)
    assert found.state == OperationState.ABANDONED and found.note == "ValueError: the study failed"
    assert [o.id for o in journal.gone()] == [op]  # its process lives on, but nobody will settle it
    with journal.operation("retrain", "clf") as fine:
        pass
    assert journal.get(fine).state == OperationState.FINISHED


def test_another_hosts_operation_is_gone_only_once_its_lease_ran_out(journal):
    op = journal.begin("register", "clf")

    def elsewhere(last_step: datetime) -> None:
        with journal.engine.begin() as conn:
            conn.execute(
                operations_table.update()
                .where(operations_table.c.id == op)
                .values(host="another-host", pid=1, updated_at=last_step)
            )

    elsewhere(datetime.now(timezone.utc) - timedelta(minutes=5))
    assert journal.gone() == []  # its process cannot be looked at from here: it may well be running
    elsewhere(datetime.now(timezone.utc) - LEASE - timedelta(minutes=1))
    assert [o.id for o in journal.gone()] == [op]


def test_a_database_made_by_an_earlier_perftune_gets_the_journal_table(uri):
    engine = sa.create_engine(AuditLog(uri).url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {operations_table.name}"))
    assert operations_table.name not in sa.inspect(engine).get_table_names()
    assert {audit_table.name, lock_table.name} <= set(sa.inspect(engine).get_table_names())
    audit = AuditLog(uri)
    assert operations_table.name in sa.inspect(engine).get_table_names()
    assert Journal(audit.engine).begin("promote", "clf") >= 1
    audit.close()
    engine.dispose()
