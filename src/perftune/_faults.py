"""Fault injection for the kill tests: a process that reaches the checkpoint named by ``$PERFTUNE_FAULT`` kills
itself with SIGKILL, exactly as ``kill -9`` from outside would, at a moment a test chooses instead of one it has to
hit by luck.

Checkpoints sit between the writes of the registry's lifecycle steps (``register``, ``promote``, ``rollback``,
``retrain``): ``register.after_create_run``, ``register.after_log_model``, ``register.after_register_model``,
``<action>.before_alias`` and ``<action>.after_alias`` around every alias move (action: ``register``,
``promote``, ``rollback``), ``retrain.after_data``, ``retrain.after_record``, ``retrain.after_study`` and
``retrain.after_register``. ``tests/faults/test_lifecycle_kill.py`` kills each command at several of them and
checks what the next command makes of what the dead one left.

Without the variable a checkpoint costs one environment lookup.
"""

from __future__ import annotations

import os
import signal

__all__ = ["FAULT_VARIABLE", "checkpoint"]

FAULT_VARIABLE = "PERFTUNE_FAULT"


def checkpoint(name: str) -> None:
    """SIGKILL this process if ``$PERFTUNE_FAULT`` is ``name``; otherwise do nothing."""
    if os.environ.get(FAULT_VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)
