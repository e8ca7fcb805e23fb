"""Recovery: settle what an interrupted ``register``, ``promote``, ``rollback`` or ``retrain`` left behind.

The registry commands call :func:`recover` on their store before they do anything else. It takes the journal's
operations that nobody will settle (:meth:`~perftune.registry.journal.Journal.gone`: their process died, or raised
half way), claims each (so two commands starting at once never settle one twice), and settles it:

* **the commit point is the alias.** An operation whose alias move had been journaled *and* made (the alias points
  where the move meant it to) is finished: the audit row it would have written is written now, with the reason
  saying so, and a registered version loses its pending tag (operation ``completed``).
* **before it, nothing counts.** A ``register`` killed earlier leaves a version without alias and audit row: it is
  marked ``interrupted`` (tag ``perftune.status``), which promote, serve and deploy refuse, and an audit row says
  why; a ``retrain`` gets an ``interrupted`` audit row after its ``retrain`` row, so its story has an end; a
  ``promote`` or ``rollback`` whose alias had not moved changed nothing (operation ``interrupted``).
* **runs end.** The MLflow runs an operation recorded (its register run, its retraining study's parent run) that
  are still RUNNING end as KILLED.

Each settlement writes its audit row and the operation's end in one transaction, and everything before it (tags,
run states) is idempotent, so a recovery that is itself killed is simply done again by the next command. The
operations one dead process left (a retraining and the register inside it) are reported as one line.
"""

from __future__ import annotations

import logging
from typing import Any

from perftune.errors import UsageError
from perftune.registry.catalog import INTERRUPTED, PENDING_TAG, STATUS_TAG, ModelRegistry
from perftune.registry.journal import OPERATION_TAG, Operation, OperationState, Owner

__all__ = ["recover"]

log = logging.getLogger("perftune.recovery")


def recover(registry: ModelRegistry, model: str | None = None) -> list[str]:
    """Settle every gone operation on ``registry``'s store (or ``model``'s); one line per process that left some."""
    groups: dict[Owner, list[Operation]] = {}
    for operation in registry.journal.gone(model):
        groups.setdefault(operation.owner, []).append(operation)
    lines = []
    for group in groups.values():
        claimed = [operation for operation in group if registry.journal.claim(operation)]
        if not claimed:
            continue  # another command is recovering them
        effects: list[str] = []
        try:
            for operation in reversed(claimed):  # the innermost (newest) first: a retraining's register, then it
                effects += _settle(registry, operation)
        except Exception as exc:  # left unsettled, so the next command tries again
            log.debug("recovery failed", exc_info=True)
            lines.append(f"{_subject(claimed[0])} was interrupted and could not be settled now ({exc}); "
                         "the next registry command tries again")  # fmt: skip
            continue
        lines.append(f"{_subject(claimed[0])} was interrupted ({_how(claimed[-1])}); {'; '.join(effects)}")
    return lines


def _subject(operation: Operation) -> str:
    details = operation.details
    if operation.op == "retrain":
        return f"retrain {operation.model} (champion v{details.get('champion', '?')})"
    version = details.get("version")
    return f"{operation.op} {operation.model}" + (f" v{version}" if version else "")


def _how(operation: Operation) -> str:
    if operation.state == OperationState.ABANDONED:
        return f"failed after {operation.step}: {operation.note}"
    return f"killed after {operation.step}"


def _settle(registry: ModelRegistry, operation: Operation) -> list[str]:
    killed = _end_runs(registry.client, operation)
    move = operation.details.get("move")
    if move and _alias_is(registry, operation.model, move["alias"], move["after"]):
        effects = [_complete_move(registry, operation, move)]
    elif operation.op == "register":
        effects = [_mark_interrupted(registry, operation)]
    elif operation.op == "retrain":
        effects = [_close_retraining(registry, operation)]
    else:
        registry.journal.finish(operation.id, OperationState.INTERRUPTED, "the alias had not moved; nothing changed")
        effects = [f"{move['alias'] if move else 'the alias'} had not moved: nothing changed"]
    if killed:
        effects.append(f"{'its run' if killed == 1 else f'{killed} runs'} ended KILLED")
    return effects


def _alias_is(registry: ModelRegistry, model: str, alias: str, version: str) -> bool:
    try:
        return registry.aliases(model).get(alias) == str(version)
    except UsageError:  # the registered model is gone
        return False


def _complete_move(registry: ModelRegistry, operation: Operation, move: dict[str, Any]) -> str:
    """The alias moved and its audit row is missing: write the row (and drop a register's pending tag)."""
    model, alias, before, after = operation.model, move["alias"], move["before"], move["after"]
    reason = f"{move['reason'] or move['action']} (finished by recovery: killed after moving the alias)"
    with registry.audit.locked(model) as conn:
        registry.settle_move(conn, model, move, operation.id, reason, OperationState.COMPLETED,
                             "alias had moved; audit row written")  # fmt: skip
    return f"finished: {alias} v{before or '—'} → v{after}, audit row written"


def _mark_interrupted(registry: ModelRegistry, operation: Operation) -> str:
    """A register killed before its alias: the version it made (found by its pending tag, or as recorded: a
    register that raised after dropping the tag) cannot be used."""
    model, op_id, recorded = operation.model, str(operation.id), str(operation.details.get("version"))
    try:
        versions = [v for v in registry.client.search_model_versions(f"name = '{model}'")
                    if v.tags.get(PENDING_TAG) == op_id or str(v.version) == recorded]  # fmt: skip
    except Exception:  # no such registered model: nothing was registered
        versions = []
    with registry.audit.locked(model) as conn:
        for v in versions:
            number = str(v.version)
            registry.client.set_model_version_tag(model, number, STATUS_TAG, INTERRUPTED)
            registry.unpend(model, number)
            registry.audit.append(conn, model, "interrupted", None, None, number,
                                  f"register was interrupted ({_how(operation)}); not promotable, "
                                  "register again", details={"operation": operation.id, "op": "register"})  # fmt: skip
        registry.journal.finish(operation.id, OperationState.INTERRUPTED, "versions marked interrupted", conn)
    if not versions:
        return "nothing had been registered"
    numbers = ", ".join(f"v{v.version}" for v in versions)
    return f"{numbers} marked interrupted (it never became challenger: cannot be promoted or served; register again)"


def _close_retraining(registry: ModelRegistry, operation: Operation) -> str:
    """A retraining killed before its outcome: an ``interrupted`` audit row ends its story."""
    model, details = operation.model, operation.details
    champion = str(details.get("champion", ""))
    reason = f"retraining interrupted ({_how(operation)}); retrain again"
    kept = {k: details[k] for k in ("store", "study_out", "challenger") if k in details}
    kept.update(operation=operation.id, op="retrain", step=operation.step)
    with registry.audit.locked(model) as conn:
        registry.audit.append(conn, model, "interrupted", None, None, champion, reason, details=kept)
        registry.journal.finish(operation.id, OperationState.INTERRUPTED, "audit row written", conn)
    return f"retraining of v{champion} marked interrupted in the audit log"


def _end_runs(client: Any, operation: Operation) -> int:
    """End the operation's runs that are still RUNNING as KILLED: those tagged with its id in the experiments of
    ``details["experiments"]``, and those of ``details["runs"]``, each an experiment (``experiment_id`` or
    ``experiment``, its name) and a tag ``[key, value]`` its runs carry."""
    ended = 0
    tagged = [
        {"experiment_id": e, "tag": [OPERATION_TAG, operation.id]} for e in operation.details.get("experiments", [])
    ]
    for query in tagged + operation.details.get("runs", []):
        if "experiment_id" in query:
            experiments = [str(query["experiment_id"])]
        else:
            found = client.get_experiment_by_name(query["experiment"])
            experiments = [found.experiment_id] if found is not None else []
        if not experiments:
            continue
        key, value = query["tag"]
        for run in client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'"):
            if run.data.tags.get(key) == str(value):
                client.set_terminated(run.info.run_id, status="KILLED")
                ended += 1
    return ended
