"""Monitoring of served models: drift, performance with and without labels, system metrics, baselines."""
