"""Serving registered versions over REST: Open Inference Protocol v2 and MLflow's /invocations."""
