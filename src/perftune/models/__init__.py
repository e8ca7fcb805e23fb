"""Model families: the Trainer protocol and its implementations."""

from perftune.models.base import TaskInfo, Trainer, TrainingParams, family_names, get_family, register_family

__all__ = ["TaskInfo", "Trainer", "TrainingParams", "family_names", "get_family", "register_family"]
