"""Sinks named in settings: `CLEARANCE_EXPORTERS=jsonl:/var/log/clearance.jsonl`.

A sink class that can be named declares the schemes it answers to (`SCHEMES`, a tuple) and how
it is made from one (a class method `from_spec(scheme, target)`). The built-in ones are found in
this package's modules, others through the `clearance.sinks` entry point group: adding a kind
of sink touches only its own module.
"""

from __future__ import annotations

import functools
import importlib
import logging
import pkgutil
from collections.abc import Callable
from importlib.metadata import entry_points

from ..errors import ConfigurationError
from ._record import Sink

_PACKAGE = __name__.rpartition(".")[0]
log = logging.getLogger("clearance.sinks")


@functools.cache
def kinds() -> dict[str, Callable[[str, str], Sink]]:
    """Every scheme a setting may use, and what makes its sink: this package's, then plug-ins'.

    A plug-in that cannot be loaded is skipped with a warning, and one naming a built-in scheme
    does not replace it.
    """
    classes: list[object] = []
    package = importlib.import_module(_PACKAGE)
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{_PACKAGE}.{info.name}")
        classes.extend(v for v in vars(module).values() if isinstance(v, type) and v.__module__ == module.__name__)
    found: dict[str, Callable[[str, str], Sink]] = {}
    for cls in classes:
        schemes, make = getattr(cls, "SCHEMES", None), getattr(cls, "from_spec", None)
        if isinstance(cls, type) and isinstance(schemes, tuple) and callable(make):
            found.update((str(s), make) for s in schemes)
    built_in = frozenset(found)
    for ep in entry_points(group="clearance.sinks"):
        try:  # a broken plug-in loses its own schemes, not the settings that do not use them
            cls = ep.load()
        except Exception as exc:
            log.warning("sink plug-in %s (%s) cannot be loaded, skipped: %r", ep.name, ep.value, exc)
            continue
        schemes, make = getattr(cls, "SCHEMES", None), getattr(cls, "from_spec", None)
        if not (isinstance(cls, type) and isinstance(schemes, tuple) and callable(make)):
            continue
        for scheme in map(str, schemes):
            if scheme in built_in:
                log.warning("sink plug-in %s (%s) names built-in scheme %r: ignored", ep.name, ep.value, scheme)
            else:
                found[scheme] = make
    return found


def sink_from_spec(spec: str) -> Sink:
    """The sink a setting names, e.g. `jsonl:<path>` (`jsonl:-` is standard output), `jsonl+fsync:<path>`.

    Raises:
        ConfigurationError: An unknown kind of sink, or no target.
    """
    scheme, _, target = spec.partition(":")
    make = kinds().get(scheme)
    if make is None or not target:
        known = ", ".join(f"{s}:<target>" for s in sorted(kinds()))
        raise ConfigurationError(f"unknown exporter {spec!r}: use one of {known} (jsonl:- is standard output)")
    return make(scheme, target)


def exporter_specs(value: object) -> object:
    """A settings validator: `CLEARANCE_EXPORTERS` is comma-separated; each one must name a sink.

    Raises:
        ValueError: One names no known sink.
    """
    if isinstance(value, str):
        value = tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, tuple | list):
        for spec in value:
            try:
                sink_from_spec(str(spec))
            except ConfigurationError as exc:
                raise ValueError(str(exc)) from None
    return value
