"""Explanations of registered versions: global permutation importance and per-row attributions."""
