"""Reading a policy file: YAML or JSON text → validated `PolicyDocument`, with positions.

Every problem is reported as `file:line:column: rule 'id': what is wrong.`
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.composer import MaxDepthExceededError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.scalarbool import ScalarBoolean
from ruamel.yaml.scalarstring import (
    DoubleQuotedScalarString,
    FoldedScalarString,
    LiteralScalarString,
    SingleQuotedScalarString,
)

from ..errors import PolicyError, PolicyProblem
from . import _plain as plain
from ._model import PolicyDocument

Path = Sequence[str | int]
_ABSENT = object()
MAX_DEPTH = 32  # a policy needs about 8 levels; the YAML composer recurses once per level
MAX_VALUES = 300_000  # counted with aliases expanded (an alias of an alias of … multiplies)


class Locator:
    """Finds where a path of keys and indexes stands in the parsed source."""

    def __init__(self, tree: Any, source: str, text: str) -> None:
        self.tree = tree
        self.source = source
        self._lines = text.splitlines()

    def line_text(self, line: int) -> str:
        """The text of a 1-based source line ('' past the end)."""
        return self._lines[line - 1] if 0 < line <= len(self._lines) else ""

    def node(self, path: Path, default: Any = None) -> Any:
        """The node at `path`, or `default` when the source has none there."""
        node = self.tree
        for part in path:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                return default
        return node

    def position(self, path: Path, *, key: bool = False) -> tuple[int | None, int | None]:
        """1-based (line, column) of the value at `path` (of its key with `key=True`).

        Falls back to the deepest ancestor that exists.
        """
        node, best = self.tree, (1, 1)
        for part in path:
            try:
                if isinstance(node, CommentedMap) and part in node:
                    # An empty value's position is the next token's: point at its key instead.
                    at_key = (key and part == path[-1]) or node[part] is None
                    ln, col = node.lc.key(part) if at_key else node.lc.value(part)
                elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
                    ln, col = node.lc.item(part)
                else:
                    break
            except (KeyError, TypeError, AttributeError):
                break
            best = (ln + 1, col + 1)
            node = node[part]
        return best

    def text_start(self, path: Path) -> tuple[int | None, int | None, bool]:
        """Where the text of a string scalar begins: (line, column, is_block_scalar)."""
        line, col = self.position(path)
        value = self.node(path)
        if line is None or col is None:
            return line, col, False
        if isinstance(value, LiteralScalarString | FoldedScalarString):
            return line + 1, None, True
        # In a flow mapping ({when: 'a > 1'}) the loader keeps no quote style: read the source.
        quote = self.line_text(line)[col - 1 : col]
        if isinstance(value, DoubleQuotedScalarString | SingleQuotedScalarString) or quote in ("'", '"'):
            return line, col + 1, False
        return line, col, False

    def rule_id(self, path: Path) -> str | None:
        """The id of the rule that `path` points into, when it does."""
        if len(path) >= 4 and path[0] == "tools" and path[2] == "rules":
            rule = self.node(path[:4])
            if isinstance(rule, dict) and isinstance(rule.get("id"), str):
                return str(rule["id"])
        return None

    def problem(self, message: str, path: Path, *, key: bool = False) -> PolicyProblem:
        """A problem located at `path`."""
        line, col = self.position(path, key=key)
        return PolicyProblem(message, self.source, line, col, self.rule_id(path), plain.key_path(path))


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    yaml.max_depth = MAX_DEPTH + 1  # its depth counts the scalar at the bottom too
    return yaml


def parse_tree(text: str, source: str) -> Any:
    """The YAML/JSON tree of `text`, with positions.

    Raises:
        PolicyError: When the text is not well-formed YAML or JSON, or nests too deeply.
    """
    try:
        return _yaml().load(text)
    except MaxDepthExceededError as exc:
        mark = exc.problem_mark
        message = f"the policy nests more than {MAX_DEPTH} levels deep here; a policy needs far fewer"
        raise PolicyError([PolicyProblem(message, source, *_at(mark))]) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = (mark.line, mark.column) if mark else None
        message = plain.yaml_message((exc.context or "").strip(), (exc.problem or "").strip(), text, at)
        if "quoted scalar" in (exc.context or "") and exc.context_mark is not None:
            mark = exc.context_mark  # where the quote opens, not the end of the file
        raise PolicyError([PolicyProblem(message, source, *_at(mark))]) from None
    except YAMLError as exc:
        raise PolicyError([PolicyProblem(f"malformed YAML: {exc}", source)]) from None


def _at(mark: Any) -> tuple[int | None, int | None]:
    return (mark.line + 1, mark.column + 1) if mark is not None else (None, None)


def _field_names(model: Any) -> list[str]:
    return list(getattr(model, "model_fields", {}))


def _model_at(path: Path) -> Any:
    """The pydantic model class that validates the mapping at `path` (for key suggestions)."""
    from . import _model as m

    shapes: dict[tuple[str, ...], Any] = {
        (): m.PolicyDocument,
        ("tools", "*"): m.ToolPolicy,
        ("tools", "*", "rules", "#"): m.Rule,
        ("tools", "*", "rules", "#", "approval"): m.ApprovalSpec,
        ("tools", "*", "params", "*"): m.ParamSpec,
        ("budgets",): m.Budgets,
        ("budgets", "session"): m.SessionBudget,
        ("budgets", "agent"): m.AgentBudget,
    }
    named = {1, 3} if len(path) > 2 and path[2] == "params" else {1}  # a tool's name, a param's name
    shape = tuple(
        "#" if isinstance(p, int) else ("*" if i in named and path[0] == "tools" else p) for i, p in enumerate(path)
    )
    return shapes.get(shape)


def _source_path(error: Any, locator: Locator) -> list[str | int]:
    """The part of an error's location that exists in the source.

    Pydantic adds union and validator tags; a missing key is not in the source but names where it belongs.
    """
    loc: tuple[str | int, ...] = tuple(p for p in error["loc"] if isinstance(p, str | int))
    path: list[str | int] = []
    for part in loc:
        if locator.node([*path, part], _ABSENT) is _ABSENT and error["type"] != "missing":
            if error["type"] == "extra_forbidden" and part == loc[-1]:
                path.append(part)
            break
        path.append(part)
    return path


def _describe(error: Any, path: list[str | int], locator: Locator) -> PolicyProblem:
    loc: tuple[str | int, ...] = tuple(p for p in error["loc"] if isinstance(p, str | int))
    kind, field = error["type"], str(loc[-1]) if loc else "policy"
    if kind == "extra_forbidden":
        allowed = _field_names(_model_at(path[:-1]))
        close = difflib.get_close_matches(field, allowed, n=1)
        hint = (
            f"; did you mean '{close[0]}'?" if close else (f"; expected one of {', '.join(allowed)}" if allowed else "")
        )
        return locator.problem(f"unknown key '{field}'{hint}", path, key=True)
    if kind == "missing":
        return locator.problem(f"'{field}' is required", path[:-1] if path[-1:] == [field] else path)
    return locator.problem(plain.pydantic_message(error, plain.label(path)), path)


def _problems(errors: list[Any], locator: Locator) -> list[PolicyProblem]:
    """One problem per error; the branches of a union that refused one value make one problem."""
    problems: list[PolicyProblem] = []
    unions: dict[tuple[str | int, ...], tuple[int, list[str]]] = {}
    for error in errors:
        path = _source_path(error, locator)
        wanted = plain.expected(error["type"], error.get("ctx"))
        tagged = len(path) < len(error["loc"]) and error["type"] not in ("missing", "extra_forbidden")
        if not (tagged and wanted):
            problems.append(_describe(error, path, locator))
            continue
        at = tuple(path)
        if at not in unions:
            unions[at] = (len(problems), [])
            problems.append(_describe(error, path, locator))
        index, options = unions[at]
        options.append(wanted)
        if len(options) > 1:
            message = plain.union_message(plain.label(path), options, error.get("input"))
            problems[index] = locator.problem(message, path)
    return problems


def read_document(text: str, source: str = "<string>") -> tuple[PolicyDocument, Locator]:
    """Parse and validate a policy's text.

    Raises:
        PolicyError: With every problem found, each located in the source.
    """
    tree = parse_tree(text, source)
    locator = Locator(tree, source, text)
    if not isinstance(tree, dict):
        raise PolicyError([PolicyProblem("a policy must be a mapping with 'version: 1' at the top", source, 1, 1)])
    try:
        document = PolicyDocument.model_validate(_expanded(tree, source))
    except ValidationError as exc:
        raise PolicyError(_problems(exc.errors(), locator)) from None
    return document, locator


class _TooMany(Exception):
    def __init__(self, node: Any) -> None:
        self.node = node


def _plain(node: Any, left: list[int]) -> Any:
    """Ruamel's round-trip containers and scalar strings as plain Python values.

    `left` counts down the values still allowed: an alias is copied here each time it is used,
    so a few lines of aliases of aliases would otherwise expand beyond memory.
    """
    left[0] -= 1
    if left[0] < 0 and isinstance(node, dict | list):  # a container knows its line
        raise _TooMany(node)
    if isinstance(node, dict):
        return {str(k) if not isinstance(k, str) else k: _plain(v, left) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v, left) for v in node]
    if isinstance(node, str):
        return str(node)
    if isinstance(node, ScalarBoolean):
        return bool(node)
    if isinstance(node, bool | int):
        return node if type(node) in (bool, int) else int(node)
    if isinstance(node, float):
        return float(node)
    return node


def _expanded(tree: Any, source: str) -> Any:
    left = [MAX_VALUES]
    try:
        plain_tree = _plain(tree, left)
        if left[0] < 0:
            raise _TooMany(None)
        return plain_tree
    except _TooMany as exc:
        lc = getattr(exc.node, "lc", None)
        line, col = (lc.line + 1, lc.col + 1) if lc is not None and lc.line is not None else (None, None)
        message = f"the policy holds more than {MAX_VALUES:,} values (aliases counted each time they are used)"
        raise PolicyError([PolicyProblem(message, source, line, col)]) from None
