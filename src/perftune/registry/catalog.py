"""The model registry as a team uses it: list, inspect, promote, roll back, archive — every alias move audited.

MLflow's model registry holds the versions, their tags and aliases; perftune adds the rules (an archived or
gate-failed version is not promoted by accident, rollback knows the previous champion) and the audit log
(:mod:`perftune.registry.audit`) in the same database. Every alias move is journaled
(:mod:`perftune.registry.journal`): begun before the alias moves, settled in the transaction of its audit row, so
a move killed in between is found and finished by :mod:`perftune.registry.recovery`. A version whose registration
has not settled (tag ``perftune.pending``, or marked ``interrupted`` by recovery) is neither promoted nor served.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from perftune._faults import checkpoint
from perftune.errors import PerftuneError, UsageError
from perftune.registry.audit import AuditEntry, AuditLog, champion_stack, current_user
from perftune.registry.journal import Journal, OperationState

CHAMPION = "champion"
CHALLENGER = "challenger"
STATUS_TAG = "perftune.status"
ARCHIVED = "archived"
INTERRUPTED = "interrupted"  # left by a register that was killed before its alias and audit row (see recovery)
PENDING_TAG = "perftune.pending"  # the journal id of the register that made the version, until it settles
RETRAIN_PREFIX = "perftune.retrain."  # tags the retraining loop sets on the versions it makes
# what `perftune models` shows of a version, in order; the first ML metric present is shown
KEY_METRICS = ("accuracy", "rmse", "test_loss", "latency_ms_p95", "throughput_rps", "model_size_bytes")


@dataclass
class ModelSummary:
    name: str
    versions: int
    archived: int
    latest: str | None
    aliases: dict[str, str]
    previous_champion: str | None
    metrics: dict[str, float]  # the champion's (else the latest version's) test metrics


@dataclass
class VersionDetail:
    name: str
    version: str
    aliases: list[str]
    status: str  # active | archived
    created_at: int
    source: str
    run_id: str | None
    gate: str
    gate_checks: list[dict[str, Any]]
    metrics: dict[str, float]
    lineage: dict[str, str] = field(default_factory=dict)
    retraining: dict[str, Any] = field(default_factory=dict)  # why and how the loop made it (JSON tags decoded)


def test_metrics(tags: dict[str, str]) -> dict[str, float]:
    """The ``test.*`` tags of a version as numbers (the register run keeps them at full precision)."""
    out = {}
    for key, value in tags.items():
        if key.startswith("test."):
            try:
                out[key[len("test.") :]] = float(value)
            except ValueError:
                continue
    return out


class ModelRegistry:
    """Registered models in the MLflow store at ``tracking_uri``, with perftune's audit log beside them."""

    def __init__(self, tracking_uri: str) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.audit = AuditLog(tracking_uri)
        self.journal = Journal(self.audit.engine)
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def close(self) -> None:
        self.audit.close()

    # ---------------------------------------------------------------------------------------- lookups

    def model(self, name: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
        known = sorted(m.name for m in self.client.search_registered_models())
        raise UsageError(
            f"no registered model {name!r} in {self.tracking_uri}; "
            + (f"registered: {', '.join(known)}" if known else "none registered yet (perftune register RUN --name …)")
        )

    def version(self, name: str, version: str | int) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version(name, str(version))
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise
        self.model(name)  # an unknown model says so; a known one lists its versions
        versions = sorted(int(v.version) for v in self.client.search_model_versions(f"name = '{name}'"))
        raise UsageError(f"{name} has no version {version!r}; versions: {', '.join(map(str, versions)) or 'none'}")

    def resolve(self, reference: str) -> Any:
        """``NAME@ALIAS`` or ``NAME/VERSION`` (also ``NAME:VERSION``) → the model version."""
        from mlflow.exceptions import MlflowException

        if "@" in reference:
            name, alias = reference.split("@", 1)
            aliases = self.aliases(name)
            if alias not in aliases:
                raise UsageError(
                    f"{name} has no alias {alias!r}; aliases: "
                    + (", ".join(f"{a} → v{v}" for a, v in sorted(aliases.items())) or "none")
                )
            try:
                return self.client.get_model_version_by_alias(name, alias)
            except MlflowException as exc:  # moved between the two reads
                raise PerftuneError(f"cannot resolve {reference}: {exc.message}") from exc
        for sep in ("/", ":"):
            if sep in reference:
                name, version = reference.rsplit(sep, 1)
                return self.version(name, version)
        raise UsageError(f"{reference!r} names no version; use NAME@ALIAS (e.g. {reference}@champion) or NAME/VERSION")

    def servable(self, reference: str) -> Any:
        """Resolve ``reference`` to a version that may be served or deployed (archived versions are refused)."""
        version = self.resolve(reference)
        if self.is_archived(version):
            raise UsageError(
                f"{version.name} v{version.version} is archived and cannot be served or deployed; "
                "promote or name another version"
            )
        self.check_settled(version)
        return version

    def aliases(self, name: str) -> dict[str, str]:
        """``{alias: version}`` of a registered model (versions as strings, as everywhere in perftune)."""
        return {alias: str(v) for alias, v in self.model(name).aliases.items()}

    @staticmethod
    def is_archived(version: Any) -> bool:
        return version.tags.get(STATUS_TAG) == ARCHIVED

    def check_settled(self, version: Any) -> None:
        """Refuse a version whose registration did not settle: still running, or killed before its alias and
        audit row (recovered: status ``interrupted``; not yet recovered: tag ``perftune.pending``)."""
        name, number = version.name, str(version.version)
        if version.tags.get(STATUS_TAG) == INTERRUPTED:
            raise UsageError(
                f"{name} v{number} was left by an interrupted `perftune register` (status interrupted): it never "
                "became challenger and cannot be promoted or served; register the trial again"
            )
        unsettled = [o for o in self.journal.unsettled(name) if str(o.details.get("version")) == number]
        pending = version.tags.get(PENDING_TAG)
        if pending is not None and pending.isdigit():
            found = self.journal.get(int(pending))
            unsettled += [found] if found is not None and found.unsettled else []
        for operation in unsettled:
            if not operation.gone():
                raise UsageError(f"{name} v{number} is in a `perftune {operation.op}` that is still running "
                                 f"({operation.who()}); wait until it finishes")  # fmt: skip
            raise UsageError(
                f"{name} v{number}'s `perftune {operation.op}` was interrupted and is not recovered yet; run "
                "`perftune models` (every registry command recovers what an interrupted one left) and try again"
            )

    # ---------------------------------------------------------------------------------------- reading

    def models(self) -> list[ModelSummary]:
        summaries = []
        moves: dict[str, list[AuditEntry]] = {}
        for entry in self.audit.entries():
            moves.setdefault(entry.model, []).append(entry)
        for registered in sorted(self.client.search_registered_models(), key=lambda m: m.name):
            versions = self.client.search_model_versions(f"name = '{registered.name}'")
            aliases = {alias: str(v) for alias, v in registered.aliases.items()}
            by_number = {str(v.version): v for v in versions}
            latest = max(by_number, key=int) if by_number else None
            shown = by_number.get(aliases.get(CHAMPION, "")) or (by_number[latest] if latest else None)
            stack = champion_stack(moves.get(registered.name, []), CHAMPION)
            summaries.append(
                ModelSummary(
                    name=registered.name,
                    versions=len(versions),
                    archived=sum(self.is_archived(v) for v in versions),
                    latest=latest,
                    aliases=aliases,
                    previous_champion=stack[-2] if len(stack) > 1 else None,
                    metrics=test_metrics(shown.tags) if shown else {},
                )
            )
        return summaries

    def registered_metrics(self, v: Any) -> dict[str, float]:
        """A version's held-out test metrics, at full precision from its register run when there is one."""
        metrics = test_metrics(v.tags)
        if v.run_id:
            run_metrics = self.client.get_run(v.run_id).data.metrics
            metrics.update({k[len("test.") :]: val for k, val in run_metrics.items() if k.startswith("test.")})
        return metrics

    def show(self, name: str, version: str | int) -> VersionDetail:
        v = self.version(name, version)
        metrics = self.registered_metrics(v)
        try:
            checks = json.loads(v.tags.get("perftune.gate.checks", "[]"))
        except json.JSONDecodeError:
            checks = []
        retraining = {}
        for key, val in v.tags.items():
            if key.startswith(RETRAIN_PREFIX):
                try:
                    retraining[key[len(RETRAIN_PREFIX) :]] = json.loads(val)
                except ValueError:
                    retraining[key[len(RETRAIN_PREFIX) :]] = val
        lineage = {
            k: val
            for k, val in sorted(v.tags.items())
            if not k.startswith(("test.", RETRAIN_PREFIX)) and k not in ("perftune.gate.checks", "perftune.refit")
        }
        return VersionDetail(
            name=name,
            version=str(v.version),
            aliases=sorted(v.aliases),
            status=v.tags.get(STATUS_TAG) or ("pending" if PENDING_TAG in v.tags else "active"),
            created_at=int(v.creation_timestamp),
            source=v.source,
            run_id=v.run_id,
            gate=v.tags.get("perftune.gate", "unknown"),
            gate_checks=checks,
            metrics=metrics,
            lineage=lineage,
            retraining=retraining,
        )

    def history(self, name: str) -> list[AuditEntry]:
        entries = self.audit.entries(name)
        if not entries:
            self.model(name)  # an unknown name is an error; a known one may simply have no moves yet
        return entries

    # ---------------------------------------------------------------------------------------- moves

    def set_challenger(
        self, name: str, version: str, reason: str = "", user: str | None = None, op: int | None = None
    ) -> AuditEntry:
        """A newly registered version becomes the challenger (and loses its pending tag); ``op``: the register's
        journal entry, settled with the audit row."""
        with self.audit.locked(name) as conn:
            before = self.aliases(name).get(CHALLENGER)
            return self._move(conn, name, "register", CHALLENGER, before, version, reason, user, op=op)

    def promote(
        self, name: str, version: str | int, reason: str = "", force: bool = False, user: str | None = None,
        details: dict[str, Any] | None = None, expect: str | None = None, op: int | None = None,
    ) -> AuditEntry:  # fmt: skip
        """Point ``champion`` at ``version``; the previous champion is remembered for ``rollback``. ``expect``:
        promote only if ``expect`` is still the champion (the one the version was compared with). ``op``: a
        journal entry of the caller's (a retraining) that this move settles."""
        with self.audit.locked(name) as conn:  # read under the lock: a register settling now has settled
            target = self.version(name, version)
            number = str(target.version)
            if self.is_archived(target):
                raise UsageError(f"{name} v{number} is archived; archived versions cannot be promoted")
            self.check_settled(target)
            if target.tags.get("perftune.gate") == "failed" and not force:
                raise UsageError(
                    f"{name} v{number} failed its gate (registered with --force); promote it with --force if you must"
                )
            before = self.aliases(name).get(CHAMPION)
            if expect is not None and before != expect:
                raise UsageError(f"{name}'s champion is v{before or '—'} now, not v{expect}; v{number} not promoted")
            if before == number:
                raise UsageError(f"{name} v{number} is already the champion")
            return self._move(conn, name, "promote", CHAMPION, before, number, reason, user, details, op)

    def rollback(
        self, name: str, reason: str = "", user: str | None = None, details: dict[str, Any] | None = None,
        expect: str | None = None,
    ) -> AuditEntry:  # fmt: skip
        """Point ``champion`` back at the version that held it before the current one. ``expect``: roll back
        only if ``expect`` is still the champion (an automatic rollback must not undo a newer promotion)."""
        with self.audit.locked(name) as conn:
            current = self.aliases(name).get(CHAMPION)
            if expect is not None and current != expect:
                raise UsageError(f"{name}'s champion is v{current or '—'} now, not v{expect}; nothing rolled back")
            if current is None:
                raise UsageError(f"{name} has no champion to roll back; promote a version first")
            stack = champion_stack(self.audit.entries(name, conn), CHAMPION)
            if not stack or stack[-1] != current:
                raise PerftuneError(
                    f"{name}'s champion is v{current}, but the audit log says v{stack[-1] if stack else '—'}: the "
                    "alias was moved outside perftune, so the previous champion is unknown; "
                    "`perftune promote` the version you want"
                )
            if len(stack) < 2:
                raise UsageError(f"{name} v{current} is the first champion; there is no previous one to roll back to")
            target = stack[-2]
            if self.is_archived(self.client.get_model_version(name, target)):
                raise UsageError(
                    f"the previous champion, {name} v{target}, is archived; `perftune promote` a version instead"
                )
            return self._move(conn, name, "rollback", CHAMPION, current, target, reason, user, details)

    def record(
        self, name: str, action: str, version: str, reason: str, details: dict[str, Any] | None = None,
        user: str | None = None, op: int | None = None,
    ) -> AuditEntry:  # fmt: skip
        """A decision that moves no alias (``retrain``, ``keep``, ``probation``), in the same audit log; ``op``: a
        journal entry this decision settles (in the audit row's transaction)."""
        with self.audit.locked(name) as conn:
            entry = self.audit.append(conn, name, action, None, None, str(version), reason, user, details)
            if op is not None:
                self.journal.finish(op, conn=conn)
            return entry

    def champion_since(self, name: str) -> AuditEntry | None:
        """The audit row that made the current champion (None when it was set outside perftune)."""
        current = self.aliases(name).get(CHAMPION)
        for entry in reversed(self.audit.entries(name)):
            if entry.alias == CHAMPION:
                return entry if entry.to_version == current else None
        return None

    def archive(self, name: str, version: str | int, reason: str = "", user: str | None = None) -> AuditEntry:
        """Retire a version: kept (with its lineage and history) for audit, but no alias may point at it."""
        target = self.version(name, version)
        number = str(target.version)
        with self.audit.locked(name) as conn:
            aliases = self.aliases(name)
            if aliases.get(CHAMPION) == number:
                raise UsageError(
                    f"{name} v{number} is the champion; promote another version or roll back before archiving it"
                )
            if self.is_archived(target):
                raise UsageError(f"{name} v{number} is archived already")
            self.client.set_model_version_tag(name, number, STATUS_TAG, ARCHIVED)
            for alias, held_by in aliases.items():
                if held_by == number:
                    self.client.delete_registered_model_alias(name, alias)
            return self.audit.append(conn, name, "archive", None, None, number, reason, user)

    def _move(
        self,
        conn: Any,
        name: str,
        action: str,
        alias: str,
        before: str | None,
        after: str,
        reason: str,
        user: str | None,
        details: dict[str, Any] | None = None,
        op: int | None = None,
    ) -> AuditEntry:
        """Move ``alias`` to ``after`` and write its audit row in ``conn``. The move is journaled first (in ``op``,
        the caller's entry, or its own), so a kill between the alias and the audit row is recovered; the audit row
        settles the entry in the same transaction."""
        before = None if before is None else str(before)
        move = {"action": action, "alias": alias, "before": before, "after": after, "reason": reason,
                "user": user or current_user(), "details": details}  # fmt: skip
        own = op is None
        step = f"the move of {alias} to v{after} began"
        if op is None:
            op = self.journal.begin(action, name, {"version": after, "move": move}, step)
        else:
            self.journal.step(op, step, move=move)
        checkpoint(f"{action}.before_alias")
        self.client.set_registered_model_alias(name, alias, after)
        checkpoint(f"{action}.after_alias")
        try:
            return self.settle_move(conn, name, move, op)
        except Exception as exc:
            # no move without its audit row: put the alias back
            if before is None:
                self.client.delete_registered_model_alias(name, alias)
            else:
                self.client.set_registered_model_alias(name, alias, before)
            if own:
                with contextlib.suppress(Exception):
                    self.journal.finish(op, OperationState.FAILED, f"alias put back: {exc}")
            raise

    def settle_move(
        self, conn: Any, name: str, move: dict[str, Any], op: int, reason: str | None = None,
        state: OperationState = OperationState.FINISHED, note: str | None = None,
    ) -> AuditEntry:  # fmt: skip
        """Write the audit row of an alias move that was made (``move`` as journaled by :meth:`_move`) and settle
        its journal entry ``op`` in the same transaction; a registered version loses its pending tag first.
        ``reason`` replaces the move's own (recovery says it finished the move)."""
        if move["action"] == "register":
            self.unpend(name, move["after"])
        entry = self.audit.append(conn, name, move["action"], move["alias"], move["before"], move["after"],
                                  reason or move["reason"], move["user"], move["details"])  # fmt: skip
        self.journal.finish(op, state, note, conn)
        return entry

    def unpend(self, name: str, version: str) -> None:
        """Drop a version's pending tag (its registration settles)."""
        if PENDING_TAG in self.client.get_model_version(name, version).tags:
            self.client.delete_model_version_tag(name, version, PENDING_TAG)
