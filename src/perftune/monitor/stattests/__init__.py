"""Built-in drift tests (one file each); the registry and base class are in :mod:`.base`."""

from perftune.monitor.stattests import chisquare, jensenshannon, ks, psi, wasserstein, ztest  # noqa: F401
from perftune.monitor.stattests.base import DriftTest, default_test, drift_test_names, get_test, register_test

__all__ = ["DriftTest", "default_test", "drift_test_names", "get_test", "register_test"]
