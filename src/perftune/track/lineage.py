"""Lineage: where a result came from (code, environment, hardware), as flat MLflow tags."""

from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import psutil

PACKAGES = ("perftune", "ray", "mlflow", "optuna", "scikit-learn", "numpy", "pandas", "pmlb", "psutil")


def git_state(path: Path | None = None) -> dict[str, str]:
    """Commit and dirty flag of the git work tree holding ``path`` (empty when not in a repository)."""
    cwd = str(path or Path.cwd())
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return {}
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    return {
        "mlflow.source.git.commit": commit.stdout.strip(),
        "perftune.git.dirty": str(bool(status.stdout.strip())).lower(),
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def environment_tags() -> dict[str, str]:
    """Python and package versions, CPU model, cores and RAM of this machine."""
    tags = {
        "perftune.python": platform.python_version(),
        "perftune.platform": platform.platform(),
        "perftune.hw.cpu_model": cpu_model(),
        "perftune.hw.cores": str(psutil.cpu_count(logical=True)),
        "perftune.hw.ram_gb": f"{psutil.virtual_memory().total / 1024**3:.1f}",
    }
    for package in PACKAGES:
        try:
            tags[f"perftune.pkg.{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    code = git_state(Path(__file__).resolve().parent)  # perftune's own commit when run from a checkout
    if code:
        tags["perftune.code.commit"] = code["mlflow.source.git.commit"]
        tags["perftune.code.dirty"] = code["perftune.git.dirty"]
    return tags


def lineage_tags(spec_fingerprint: str, spec_path: str | None, seed: int) -> dict[str, str]:
    """Tags shared by a study's parent run and all its trial runs."""
    tags = {
        "perftune.spec_hash": spec_fingerprint,
        "perftune.split_seed": str(seed),
        **environment_tags(),
        **git_state(Path(spec_path).resolve().parent if spec_path else None),
    }
    if spec_path:
        tags["perftune.spec_path"] = str(Path(spec_path).resolve())
    return tags
