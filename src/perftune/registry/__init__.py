"""Model registry: register (refit, test, gate), versions with lineage, aliases."""
