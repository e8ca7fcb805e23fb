"""Errors meant for people: each says what is wrong, where, and how to fix it.

The CLI prints ``str(error)`` as one line and exits with ``error.exit_code``; no traceback unless
``--debug``. Library callers catch :class:`PerftuneError`.
"""

from __future__ import annotations


class PerftuneError(Exception):
    """Base class of every error perftune raises on purpose."""

    exit_code: int = 1


class UsageError(PerftuneError):
    """The user asked for something invalid (a bad spec, an unknown name); exit code 2."""

    exit_code = 2


class SpecError(UsageError):
    """The spec file is malformed or names something that does not exist."""


class DatasetError(UsageError):
    """A dataset cannot be found, or its content cannot be used (missing target, text features, …)."""


class DataUnavailableError(PerftuneError):
    """A known dataset exists but cannot be read here (not cached and no network)."""


class ClusterUnavailableError(PerftuneError):
    """The Ray cluster named by ``--address`` cannot be reached."""


class StudyInterrupted(PerftuneError):
    """The study was stopped before every trial finished; ``--resume`` continues it."""

    exit_code = 130


class StudyStateError(UsageError):
    """An output folder holds a study that cannot be resumed or would be overwritten."""
