"""Run a callback right after a module is first imported (a post-import hook).

`configure()` must not import every framework that happens to be installed (LangChain and the
Agents SDK alone take seconds), yet a framework imported after `configure()` must be governed
too. A framework already imported is installed at once; any other is installed the moment the
application imports it: once its module has run and is attached to its parent package, before
the import statement that asked for it returns (and while the import lock is held, so another
thread importing it meanwhile gets it governed).
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

    def __init__(self, real: importlib.abc.Loader, name: str, then: Callable[[], None]) -> None:
        self._real, self._name, self._then = real, name, then

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._real.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        try:
            self._real.exec_module(module)
        except BaseException:
            _finder.waiting.setdefault(self._name, self._then)  # a later import that succeeds still calls back
            raise
        _attach(self._name)
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
        if name not in self.waiting or getattr(self._busy, "name", None) == name:
            return None
        self._busy.name = name
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self._busy.name = None
        if spec is None or spec.loader is None:
            return None
        then = self.waiting.pop(name, None)
        if then is None:  # another thread took it meanwhile
            return None
        spec.loader = _Loader(spec.loader, name, then)
        return spec


def _attach(name: str) -> None:
    """Set a just-run submodule on its parent package, as the import system does only after the loader returns.

    Without it `google.adk` is not yet an attribute of `google` when the callback runs, and the
    callback's own `google.adk.__version__` fails.
    """
    parent, _, child = name.rpartition(".")
    if parent and parent in sys.modules and name in sys.modules:
        setattr(sys.modules[parent], child, sys.modules[name])  # sys.modules: a module may replace itself


_finder = _Finder()


def when_imported(module: str, then: Callable[[], None]) -> None:
    """Call `then()` now if `module` is imported, else right after it is."""
    if module in sys.modules:
        then()
        return
    _finder.waiting[module] = then
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
