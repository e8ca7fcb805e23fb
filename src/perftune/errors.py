"""Errors meant for people: each says what is wrong, where, and how to fix it.

The CLI prints ``str(error)`` as one line and exits with ``error.exit_code``; no traceback unless
``--debug``. Library callers catch :class:`PerftuneError`.

How a message reads: lowercase, no full stop, ``where: what is wrong; how to fix it``, one line, never the
user's data (a request's values, a file's rows). Unknown names get :func:`did_you_mean`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

# Words people write for what perftune names otherwise, so a suggestion follows the meaning where the
# spelling misleads (`train_secs` is closer to `train_loss` letter by letter, but means `train_time_s`).
_MEANINGS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("sec", "secs", "second", "seconds", "time", "duration", "runtime", "wall"), ("time_s",)),
    **dict.fromkeys(("mem", "memory", "ram", "rss"), ("memory_mb",)),
    **dict.fromkeys(("lat", "latency"), ("latency_ms",)),
    **dict.fromkeys(("size", "bytes", "mb"), ("size_bytes", "memory_mb")),
    **dict.fromkeys(("cpu", "compute"), ("cpu_s",)),
    **dict.fromkeys(("rps", "qps", "throughput"), ("throughput_rps",)),
    **dict.fromkeys(("lr", "eta", "eta0"), ("learning_rate",)),
    **dict.fromkeys(("bs", "batch", "batchsize"), ("batch_size",)),
    **dict.fromkeys(("epoch", "epochs", "passes"), ("epochs",)),
    **dict.fromkeys(("acc",), ("accuracy",)),
}


def field_name(text: object) -> str:
    """A key as an error message shows it: as written, or quoted with escapes when it is empty, padded or holds
    control characters (a key made of a line break must still read as one line)."""
    text = str(text)
    return text if text and text.isprintable() and text == text.strip() else repr(text)


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the known name ``name`` most likely meant, or ``""``.

    A known name that holds what a word of ``name`` means wins (ties: the one sharing more words with
    ``name``, then the shorter); otherwise the closest spelling.
    """
    known = list(known)
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]
    meant = [k for k in known if any(frag in k for w in words for frag in _MEANINGS.get(w, ()))]
    if meant:
        best = min(meant, key=lambda k: (-len(set(words) & set(k.split("_"))), len(k)))
    else:
        close = difflib.get_close_matches(name, known, n=1)
        best = close[0] if close else None
    return f" (did you mean {best!r}?)" if best and best != name else ""


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
