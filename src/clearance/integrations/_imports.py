"""Run a callback right after a module is first imported (a post-import hook).

`configure()` must not import every framework that happens to be installed (LangChain and the
Agents SDK alone take seconds), yet a framework imported after `configure()` must be governed
too. A framework already imported is installed at once; any other is installed the moment the
application imports it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any


class _Loader(importlib.abc.Loader):
    """The real loader, then the callback."""

    def __init__(self, real: importlib.abc.Loader, then: Callable[[], None]) -> None:
        self._real, self._then = real, then

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._real.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._real.exec_module(module)
        self._then()

    def __getattr__(self, name: str) -> Any:  # resource readers and the like
        return getattr(self._real, name)


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self) -> None:
        self.waiting: dict[str, Callable[[], None]] = {}
        self._busy = threading.local()

    def find_spec(
        self, name: str, path: Any, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        then = self.waiting.get(name)
        if then is None or getattr(self._busy, "name", None) == name:
            return None
        self._busy.name = name
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self._busy.name = None
        if spec is None or spec.loader is None:
            return None
        del self.waiting[name]
        spec.loader = _Loader(spec.loader, then)
        return spec


_finder = _Finder()


def when_imported(module: str, then: Callable[[], None]) -> None:
    """Call `then()` now if `module` is imported, else right after it is."""
    if module in sys.modules:
        then()
        return
    _finder.waiting[module] = then
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
