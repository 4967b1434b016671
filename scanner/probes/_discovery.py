"""Find and import every probe module of this package, so their `@register` decorators run.

It imports nothing of scanner by name: `base.registry()` calls it, and the probe modules it
loads import `base`, so naming them here would close an import cycle.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

_PACKAGE = __name__.rpartition(".")[0]
# Modules of this package that are not probes (kits start with "_" and are skipped anyway).
_NOT_PROBES = {"base", "netio"}
_loaded = False


def load_all() -> None:
    """Import every probe module once (cheap after the first call)."""
    global _loaded
    if _loaded:
        return
    # The package's own search path (imported before any of its modules): a folder added to it
    # is searched too, which is how tests drop in a throwaway probe module.
    for info in pkgutil.iter_modules(sys.modules[_PACKAGE].__path__):
        if info.name.startswith("_") or info.name in _NOT_PROBES:
            continue
        importlib.import_module(f"{_PACKAGE}.{info.name}")
    _loaded = True
