"""Binding a call's arguments to the tool's parameter names.

So `args.amount` means the same whether the caller passed it by position or by keyword.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from .._canonical import to_plain
from .._edits import fits
from ..policy._model import ParamType

_SKIP_FIRST = ("self", "cls")


class Binder:
    """Binds calls of one function; built once per guarded tool."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.signature = inspect.signature(fn)
        params = list(self.signature.parameters.values())
        self._skip = params[0].name if params and params[0].name in _SKIP_FIRST else None
        self._var_kw = next((p.name for p in params if p.kind is p.VAR_KEYWORD), None)
        self._simple = self._var_kw is None and all(p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params)
        # For plain signatures, binding is a zip and a dict update (inspect's bind costs ~6 µs);
        # anything unusual falls back to Signature.bind, which also raises the right TypeError.
        self._positional = tuple(p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD)
        self._names = frozenset(p.name for p in params)
        self._defaults = {p.name: p.default for p in params if p.default is not p.empty}
        self.params = _param_types(fn, self.signature) if self._var_kw is None else None

    def _fast(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any] | None:
        if not self._simple or len(args) > len(self._positional):
            return None
        values = dict(zip(self._positional, args, strict=False))
        for key in kwargs:
            if key in values or key not in self._names:
                return None
        values.update(kwargs)
        if len(values) < len(self._names):
            for key, default in self._defaults.items():
                values.setdefault(key, default)
            if len(values) < len(self._names):
                return None
        return values

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The call's arguments by parameter name, defaults filled in, as plain JSON values.

        Raises:
            TypeError: When the call does not fit the signature (as calling the tool would).
        """
        fast = self._fast(args, kwargs)
        if fast is not None:
            values = fast
        else:
            bound = self.signature.bind(*args, **kwargs)
            bound.apply_defaults()
            values = bound.arguments
        if not self._simple:
            values = dict(values)
            extra = values.pop(self._var_kw, None) if self._var_kw else None
            if extra:
                values.update(extra)
        if self._skip:
            values = {k: v for k, v in values.items() if k != self._skip}
        plain = to_plain(values)
        assert isinstance(plain, dict)
        return plain

    @property
    def takes_self(self) -> bool:
        """Whether the tool is a method (its first parameter is `self` or `cls`)."""
        return self._skip is not None

    def call_from(self, values: Mapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Positional and keyword arguments that call the tool with `values` (by parameter name).

        Number values are turned into the parameter's `float` or `Decimal`; names that are not
        parameters go to its `**kwargs`, if it has one.

        Raises:
            TypeError: A value does not fit its parameter's type, or a name is unknown.
        """
        hints = _hints(self.fn)
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        rest = dict(values)
        for p in self.signature.parameters.values():
            if p.kind is p.VAR_KEYWORD:
                continue
            if p.name not in rest:
                continue
            value = _coerce(p.name, rest.pop(p.name), hints.get(p.name), (self.params or {}).get(p.name))
            if p.kind is p.POSITIONAL_ONLY:
                args.append(value)
            elif p.kind is p.VAR_POSITIONAL:
                args.extend(value)
            else:
                kwargs[p.name] = value
        if rest and self._var_kw is None:
            raise TypeError(f"the approved call names {', '.join(map(repr, rest))}, which are not parameters")
        kwargs.update(rest)
        return tuple(args), kwargs

    def rebuild(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any], proposed: Mapping[str, Any], run: Mapping[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The call's arguments with an approver's edits applied.

        Only the arguments whose value changed are replaced (with plain JSON values, turned into
        the parameter's number type where it has one); the others stay the objects the agent
        passed. `proposed` is the bound form of the original call, `run` the approved one.

        Raises:
            TypeError: An edited value does not fit the parameter's type, or names nothing.
        """
        changed = {k: v for k, v in run.items() if k not in proposed or to_plain(proposed[k]) != v}
        if not changed:
            return args, dict(kwargs)
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        hints = _hints(self.fn)
        for name, value in changed.items():
            if name in self.signature.parameters and name != self._var_kw:
                bound.arguments[name] = _coerce(name, value, hints.get(name), (self.params or {}).get(name))
            elif self._var_kw is not None:
                bound.arguments.setdefault(self._var_kw, {})[name] = value
            else:
                raise TypeError(f"the edited call names {name!r}, which is not a parameter")
        return bound.args, bound.kwargs


def _coerce(name: str, value: Any, hint: Any, kind: ParamType | None) -> Any:
    if hint is Decimal and isinstance(value, int | float) and not isinstance(value, bool):
        return Decimal(str(value))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is not None and not fits(value, kind):
        raise TypeError(f"the edited value of {name!r} is not a {kind}: {value!r}")
    return value


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: no coercion, the type check still applies
        return {}


def _param_types(fn: Callable[..., Any], signature: inspect.Signature) -> dict[str, ParamType]:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # one unresolvable annotation: resolve the others one by one
        hints = {}
        for name, annotation in getattr(fn, "__annotations__", {}).items():
            try:
                hints[name] = (
                    eval(annotation, getattr(fn, "__globals__", {})) if isinstance(annotation, str) else annotation
                )
            except Exception:  # this one stays unknown ("any"); its name is still checked
                continue
    out: dict[str, ParamType] = {}
    for name, p in signature.parameters.items():
        if name in _SKIP_FIRST and p is next(iter(signature.parameters.values())):
            continue
        out[name] = "list" if p.kind is p.VAR_POSITIONAL else _param_type(hints.get(name, Any))
    return out


def _param_type(hint: Any) -> ParamType:
    origin = typing.get_origin(hint) or hint
    if origin is typing.Annotated:
        return _param_type(typing.get_args(hint)[0])
    if origin in (typing.Union, types.UnionType):
        return "any"  # Optional[X] may be null; CEL's checker would reject the null case
    if hint is bool:
        return "boolean"
    if hint is int:
        return "integer"
    if hint in (float, Decimal):
        return "number"
    if hint is str:
        return "string"
    if isinstance(origin, type):
        if issubclass(origin, list | tuple | set | frozenset):
            return "list"
        if issubclass(origin, Mapping) or hasattr(origin, "model_fields") or typing.is_typeddict(origin):
            return "map"
    return "any"
