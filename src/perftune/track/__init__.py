"""Tracking: MLflow runs and lineage."""
