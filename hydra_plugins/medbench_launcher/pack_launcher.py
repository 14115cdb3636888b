"""Deprecated module name of :mod:`colocate_launcher` (configs that name
``hydra_plugins.medbench_launcher.pack_launcher.PackLauncher`` keep working for one release)."""

from hydra_plugins.medbench_launcher.colocate_launcher import PackLauncher

__all__ = ["PackLauncher"]
