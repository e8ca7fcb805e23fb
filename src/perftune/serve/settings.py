"""The server's settings: one pydantic object, checked before anything is loaded or any port is opened.

``perftune serve`` builds it from its options; ``--workers`` processes receive it as JSON in an environment
variable (``SETTINGS_ENV``). Only pydantic is imported here, so a bad option is answered before FastAPI,
uvicorn or MLflow load.

``threads`` left at ``None`` is resolved by the server from the version it starts with (see
:func:`perftune.measure.threads.serving_threads`); ``--workers`` processes receive the resolved number, so every
worker runs its model on the one the parent announced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from perftune.errors import UsageError
from perftune.serve.durable import Durability

SETTINGS_ENV = "PERFTUNE_SERVE_SETTINGS"

# How each field is spelled on the command line (for error messages).
OPTION_NAMES = {
    "reference": "REFERENCE",
    "max_body_bytes": "--max-body-mb",
    "poll_interval_s": "--poll-interval",
}


class ServeSettings(BaseModel):
    """Everything a server process needs."""

    model_config = ConfigDict(extra="forbid")

    reference: str = Field(min_length=1, description="NAME@ALIAS (followed) or NAME/VERSION (pinned)")
    tracking_uri: str
    scoring_uri: str | None = Field(default=None, description="None: no scoring log")
    token_file: str | None = None
    protect_health: bool = False
    protect_metrics: bool = False
    scoring_durability: Durability = Field(
        default=Durability.memory,
        description="memory: rows queued in memory (SIGTERM drains, SIGKILL loses the queue); local: each row is"
        " written through to a local file before the response is sent (SIGKILL loses nothing acknowledged)",
    )
    workspace: str | None = Field(
        default=None,
        description="folder of the dead-letter file and the durable log when the scoring log is not an SQLite file"
        " (beside the SQLite file otherwise); default ./perftune-workspace",
    )
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0, description="larger bodies get a 413")
    poll_interval_s: float = Field(default=2.0, ge=0, allow_inf_nan=False, description="0: never re-check")
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8080, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    threads: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="threads of each worker's model runtimes (BLAS/OpenMP, torch, onnxruntime); None: as many as"
        " the version was measured with (1 when it records none), at most usable cores ÷ workers",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "info"

    @classmethod
    def build(cls, **values: Any) -> ServeSettings:
        """Validate options; a bad one is a one-line :class:`UsageError` that names the option."""
        try:
            return cls(**values)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = str(err["loc"][0]) if err["loc"] else "settings"
            option = OPTION_NAMES.get(field, "--" + field.replace("_", "-"))
            given = values.get(field)
            if field == "max_body_bytes" and isinstance(given, (int, float)):
                given = f"{given / 2**20:g}"
            msg = err["msg"].removeprefix("Value error, ")
            raise UsageError(f"{option} {given!s}: {msg[0].lower() + msg[1:]}") from None

    def scoring_spool(self) -> Path:
        """Where the dead-letter file and the durable log live."""
        from perftune.serve.scoring import spool_dir

        assert self.scoring_uri is not None
        return spool_dir(self.scoring_uri, Path(self.workspace) if self.workspace else None)

    def token(self) -> str | None:
        """The bearer token from ``token_file`` (None: no auth)."""
        if not self.token_file:
            return None
        path = Path(self.token_file)
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise UsageError(f"--token-file {path}: {exc.strerror}") from exc
        if len(token) < 16:
            raise UsageError(f"--token-file {path}: the token must be at least 16 characters")
        return token
