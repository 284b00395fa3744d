"""The site's generated reference pages, written from the code while MkDocs builds.

MkDocs runs this module as a hook (`hooks:` in mkdocs.yml): `on_files` adds the pages under
`reference/` to the site, so they cannot go stale. tests/test_docs_site.py imports it too, to
check that every setting, policy key, command and route has an entry and a description.

Every page is a list of entries: `entries()` returns them as data, `page()` renders them as
Markdown. Text from the code is escaped before it is put in Markdown (`cell`, `text`).
"""

from __future__ import annotations

import enum
import html
import inspect
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Entry:
    """One documented thing: a setting, a policy key, a helper or fact, a command or a route.

    Attributes:
        name: How it is written: `CLEARANCE_PORT`, `tools.<tool>.rules[].when`, `clearance serve`,
            `GET /v1/events`.
        kind: Its type, its signature or its method.
        default: Its default, as text ("" when none applies).
        description: What it is, from the code (its field's docstring entry, its help text, the
            route's description).
        details: More Markdown under the entry (a command's options, a route's parameters).
    """

    name: str
    kind: str
    default: str
    description: str
    details: str = ""


# ---------------------------------------------------------------- escaping


def text(value: str) -> str:
    """Plain text from the code as Markdown that shows it as written (inline code kept)."""
    parts = re.split(r"(`[^`\n]+`)", value)
    out = []
    for i, part in enumerate(parts):
        if i % 2:  # `code`: shown literally by Markdown already
            out.append(part)
        else:
            part = html.escape(part, quote=False)
            out.append(re.sub(r"([\\*_\[\]#|~])", r"\\\1", part))
    return "".join(out)


def code(value: str) -> str:
    """`value` as inline code, whatever backticks it holds; safe in a table cell."""
    value = " ".join(value.split())
    longest = max((len(m) for m in re.findall(r"`+", value)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def default_cell(value: str) -> str:
    """A default for a table cell: as code, "required" as a word, nothing when there is none."""
    return "*required*" if value == "required" else code(value) if value else ""


def cell(value: str) -> str:
    """Text for a table cell: one line (`|` is escaped by `text`; the tables skip it in code)."""
    return text(" ".join(value.split()))


# ---------------------------------------------------------------- docstrings


def attributes(cls: type) -> dict[str, str]:
    """The `Attributes:` entries of a class's (Google-style) docstring and its bases'."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        doc = inspect.cleandoc(klass.__dict__.get("__doc__") or "")
        section = re.search(r"^Attributes:\n((?:[ \t]+.*\n?|\n)*)", doc, flags=re.M)
        if section is None:
            continue
        name = None
        for line in section.group(1).splitlines():
            if m := re.match(r"^    ([A-Za-z_][A-Za-z0-9_]*)(?: \([^)]*\))?: ?(.*)$", line):
                name = m.group(1)
                found[name] = m.group(2).strip()
            elif name and line.startswith("        "):
                found[name] += " " + line.strip()
    return found


def first_paragraph(doc: str | None) -> str:
    """The summary of a docstring: its first paragraph, on one line."""
    return " ".join(inspect.cleandoc(doc or "").split("\n\n")[0].split())


# ---------------------------------------------------------------- types and defaults


def type_text(hint: Any) -> str:
    """A type annotation as a reader of the docs would write it."""
    from clearance.policy import _model

    named = {_model.Duration: "duration", _model.Approvers: "list of approvers", _model.Amount: "number"}
    for known, shown in named.items():
        if hint is known or hint == known:
            return shown
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return type_text(args[0])
    if hint is type(None):
        return "null"
    if origin is typing.Literal:
        return " | ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(dict.fromkeys(type_text(a) for a in args))
    if origin in (tuple, list, frozenset, set):
        return f"list of {type_text(args[0])}" if args else "list"
    if origin is dict:
        return f"map of {type_text(args[0])} to {type_text(args[1])}"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return " | ".join(str(m.value) for m in hint)
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        return "mapping"
    names = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path", Decimal: "number"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def default_text(field: Any) -> str:
    """A pydantic field's default as it is written in a file or the environment."""
    from pydantic_core import PydanticUndefined

    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None or value == () or value == {}:
        return ""
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


# ---------------------------------------------------------------- settings


def settings_entries(model: type[BaseModel]) -> list[Entry]:
    """Every field of a settings class: its environment variable, type, default, description."""
    described = attributes(model)
    hints = typing.get_type_hints(model, include_extras=True)
    prefix = str(model.model_config.get("env_prefix", ""))
    return [
        Entry(
            f"{prefix}{name}".upper(),
            type_text(hints[name]).replace("SecretStr", "secret"),
            default_text(field),
            _without_own_name(field.description or described.get(name, ""), f"{prefix}{name}".upper()),
        )
        for name, field in model.model_fields.items()
    ]


def _without_own_name(description: str, variable: str) -> str:
    """A setting's description without the trailing "`CLEARANCE_X`." its docstring entry ends with."""
    return re.sub(rf"\s*`{variable}`\.?$", "", description)


def settings_page() -> str:
    """docs/reference/settings.md."""
    from clearance import Settings
    from clearance.server import ServerSettings

    out = [
        "# Settings",
        "",
        "Every setting is read from a `CLEARANCE_*` environment variable. The SDK's (`clearance.configure()`"
        " takes the same names as keyword arguments, which win over the environment) and the server's"
        " (`clearance serve`; its command-line options win over the environment) are listed apart;"
        " some names appear in both. Generated from `clearance.Settings` and"
        " `clearance.server.ServerSettings`.",
        "",
    ]
    for title, model in (("The SDK", Settings), ("The server", ServerSettings)):
        out += [f"## {title}", "", "| Variable | Type | Default | What it does |", "|---|---|---|---|"]
        for e in settings_entries(model):
            default = default_cell(e.default)
            out.append(f"| {code(e.name)} | {cell(e.kind)} | {default} | {cell(e.description)} |")
        out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------- policy keys, helpers, facts


def _models_in(hint: Any) -> Iterator[tuple[str, type[BaseModel]]]:
    """The models a field's type holds, each with how its key path continues (`.<name>`, `[]`)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        yield "", hint
    elif origin is typing.Annotated:
        yield from _models_in(args[0])
    elif origin in (typing.Union, types.UnionType):
        for a in args:
            yield from _models_in(a)
    elif origin is tuple and args:
        for suffix, model in _models_in(args[0]):
            yield "[]" + suffix, model
    elif origin is dict:
        for suffix, model in _models_in(args[1]):
            yield ".<name>" + suffix, model


_PLACEHOLDERS = {"tools": "<tool>", "params": "<param>", "redact": "<tool>"}


def policy_entries(model: type[BaseModel] | None = None, path: str = "") -> list[Entry]:
    """Every key a policy file may hold, depth first: its path, type, default, description."""
    from clearance.policy import PolicyDocument

    model = model or PolicyDocument
    described = attributes(model)
    hints = typing.get_type_hints(model, include_extras=True)
    found = []
    for name, field in model.model_fields.items():
        key = f"{path}.{name}" if path else name
        found.append(Entry(key, type_text(hints[name]), default_text(field), described.get(name, "")))
        for suffix, inner in _models_in(hints[name]):
            suffix = suffix.replace("<name>", _PLACEHOLDERS.get(name, "<name>"))
            found += policy_entries(inner, key + suffix)
    return found


def helper_entries() -> list[Entry]:
    """Every function a condition may call, beside CEL's own and its strings and math extensions."""
    from clearance.policy import _cel
    from clearance.policy import _functions as fn

    # The engine's declarations do not say their names: read them where they are declared.
    declared = re.findall(r'_overloads\("(\w+)"', inspect.getsource(_cel._declarations))
    found = []
    for name in [*declared, *fn.COMPARISONS]:
        if name in declared:
            impl = getattr(fn, name)
            signature = f"{name}{inspect.signature(impl)}".replace("'", "")
            found.append(Entry(name, signature, "", first_paragraph(impl.__doc__)))
        else:  # dec_gt and its kind: a comparison of dec_cmp's result
            op = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "eq": "=="}[name.removeprefix("dec_")]
            found.append(
                Entry(name, f"{name}(a, b) -> bool", "", f"Whether `a {op} b`, the two compared exactly as decimals.")
            )
    return found


def fact_entries() -> list[Entry]:
    """Every fact a condition may read as `facts.NAME`, from the table in `_facts`' docstring."""
    from clearance.policy import _facts

    found = []
    for line in (_facts.__doc__ or "").splitlines():
        m = re.match(r"^\|\s*(`.+?`)\s*\|\s*(.+?)\s*\|$", line)
        if m:
            for name in re.findall(r"`([^`]+)`", m.group(1)):
                found.append(Entry(f"facts.{name}", "", "", m.group(2)))
    return found


def fact_kinds_documented() -> set[str]:
    """The fact kinds (`_facts.FactKind`) the fact entries name, parsed as the policy parses them."""
    from clearance.policy import _facts

    kinds = set()
    for e in fact_entries():
        name = e.name.removeprefix("facts.").replace("<window>", "1h").replace("<arg>", "amount")
        name = name.replace("..._tokens_1h", "agent_budget_extension_tokens_1h")
        spec = _facts.parse_fact(name)
        if spec is not None:
            kinds.add(spec.kind)
    return kinds


def policy_page() -> str:
    """docs/reference/policy.md."""
    out = [
        "# Policy keys, helpers and facts",
        "",
        "Every key a policy file (YAML or JSON) may hold, every helper function and every fact a"
        " rule's `when` condition may use. `clearance policy check` validates a file against exactly"
        " these. Generated from the policy's models (`clearance.policy`).",
        "",
        "In a key path, `<tool>` stands for a tool name or glob, `<param>` for an argument name and"
        " `[]` for each item of a list. A duration is written `90s`, `30m`, `2h`, `1d` or as a whole"
        " number of seconds; an approver as `role:NAME` or `user:NAME`.",
        "",
        "## Keys",
        "",
        "| Key | Type | Default | What it does |",
        "|---|---|---|---|",
    ]
    for e in policy_entries():
        default = default_cell(e.default)
        out.append(f"| {code(e.name)} | {cell(e.kind)} | {default} | {cell(e.description)} |")
    out += [
        "",
        "A parameter may also be written as just its type: `amount: number` is `amount: {type: number}`.",
        "",
        "## Helpers",
        "",
        "Besides CEL's standard functions and its strings and math extensions, conditions may call:",
        "",
        "| Function | What it returns |",
        "|---|---|",
    ]
    out += [f"| {code(e.kind)} | {cell(e.description)} |" for e in helper_entries()]
    out += [
        "",
        "## Facts",
        "",
        "A condition reads stateful facts as `facts.NAME`; each is computed exactly from the store, and"
        " only for tools whose rules use it. A window is a number and a unit: `10m`, `1h`, `24h`, `7d`."
        " Calls count unless they were blocked, denied, expired or cancelled, so a cap also counts"
        " calls still waiting for approval.",
        "",
        "| Fact | Value |",
        "|---|---|",
    ]
    out += [f"| {code(e.name)} | {cell(e.description)} |" for e in fact_entries()]
    out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------- the command line


def commands(group: click.Command | None = None, path: str = "clearance") -> Iterator[tuple[str, click.Command]]:
    """Every command and group of `clearance`, depth first, with how it is invoked."""
    from clearance.cli import main

    command = group or main
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from commands(sub, f"{path} {name}")


def option_entries(command: click.Command) -> list[Entry]:
    """A command's arguments and options: how each is written, its type, default and help."""
    found = []
    ctx = click.Context(command, info_name=command.name)
    for param in command.get_params(ctx):
        if isinstance(param, click.Argument):
            found.append(Entry(param.human_readable_name, param.type.name, "", ""))
            continue
        assert isinstance(param, click.Option)
        if param.hidden:
            continue
        names = " / ".join(", ".join(opts) for opts in (param.opts, param.secondary_opts) if opts)
        if param.is_flag and not param.secondary_opts:
            kind = "flag"
        elif isinstance(param.type, click.Choice):
            kind = " | ".join(str(c) for c in param.type.choices)
        else:
            kind = param.type.name
        default = "" if param.default is None or param.is_flag and not param.secondary_opts else param.default
        if isinstance(default, bool):
            default = param.secondary_opts[0] if not default and param.secondary_opts else param.opts[0]
        unset = isinstance(default, enum.Enum) and type(default).__module__.startswith("click")  # click's UNSET
        if unset or callable(default) or default in ((), []):
            default = ""
        help_text = param.help or ""
        envvar = param.envvar if isinstance(param.envvar, str) and param.envvar not in help_text else ""
        envvar = f" Environment: `{envvar}`." if envvar else ""
        found.append(Entry(names, kind, str(default), help_text + envvar))
    return found


def cli_entries() -> list[Entry]:
    """Every command of `clearance` (not the groups): its usage, help and options."""
    found = []
    for path, command in commands():
        if isinstance(command, click.Group) and path != "clearance":
            continue
        ctx = click.Context(command, info_name=path)
        usage = " ".join(command.collect_usage_pieces(ctx))
        found.append(Entry(path, f"{path} {usage}", "", inspect.cleandoc(command.help or "")))
    return found


def cli_page() -> str:
    """docs/reference/cli.md."""
    out = [
        "# Command line",
        "",
        "Every command of `clearance`, its usage, help and options. Generated from the commands"
        " themselves (`clearance.cli.main`); `clearance COMMAND --help` prints the same.",
        "",
    ]
    for path, command in commands():
        depth = min(path.count(" ") + 1, 3)
        if path != "clearance":
            out += [f"{'#' * (depth + 1)} {path}", ""]
        if isinstance(command, click.Group) and path != "clearance":
            out += [text(inspect.cleandoc(command.help or "")), ""]
            continue
        ctx = click.Context(command, info_name=path)
        out += ["```text", f"{path} {' '.join(command.collect_usage_pieces(ctx))}", "```", ""]
        out += [_help_markdown(command.help or ""), ""]
        options = option_entries(command)
        if options:
            out += ["| Argument or option | Type | Default | What it does |", "|---|---|---|---|"]
            for e in options:
                default = code(e.default) if e.default else ""
                out.append(f"| {code(e.name)} | {cell(e.kind)} | {default} | {cell(e.description)} |")
            out.append("")
    return "\n".join(out)


def _help_markdown(help_text: str) -> str:
    """A command's help as Markdown: paragraphs as text, click's no-rewrap blocks as code blocks."""
    out = []
    for para in inspect.cleandoc(help_text).split("\n\n"):
        if para.startswith("\b\n"):
            out.append("```text\n" + para[2:] + "\n```")
        else:
            out.append(text(" ".join(para.split())))
    return "\n\n".join(out)


# ---------------------------------------------------------------- the REST API


def openapi() -> dict[str, Any]:
    """The server's OpenAPI document."""
    from clearance.server import _openapi

    return _openapi.document()


def served_routes() -> list[tuple[str, set[str], Any]]:
    """Every route the server's app serves: path, methods, and the route (a FastAPI `APIRoute` or not)."""
    import fastapi.routing

    from clearance.server import ServerSettings, create_app

    def as_documented(path: str) -> str:  # `{id:path}` is `{id}` in the OpenAPI document
        return re.sub(r"\{(\w+):\w+\}", r"{\1}", path)

    routes = create_app(ServerSettings()).routes
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)  # FastAPI 0.16x: included routers
    if contexts is None:
        return [(as_documented(r.path), set(getattr(r, "methods", None) or ()), r) for r in routes]
    return [(as_documented(c.path), set(c.methods or ()), c.route) for c in contexts(routes)]


def access() -> dict[str, str]:
    """Who may call each route (`GET /v1/events`), from the auth dependencies it declares."""
    from fastapi.routing import APIRoute

    from clearance.server import _auth

    def calls(dependant: Any) -> Iterator[Any]:
        for d in dependant.dependencies:
            yield d.call
            yield from calls(d)

    found = {}
    for path, methods, route in served_routes():
        if not isinstance(route, APIRoute):
            continue
        scopes, keyed, metrics = set(), False, False
        for call in calls(route.dependant):
            if getattr(call, "__qualname__", "") == f"{_auth.require.__name__}.<locals>.check":
                scopes.add(inspect.getclosurevars(call).nonlocals["scope"])
            keyed |= call is _auth.current_key
            metrics |= call is _auth.metrics_reader
        if scopes:
            who = f"a key or signed-in person with the {' and '.join(f'`{s}`' for s in sorted(scopes))} scope"
        elif metrics:
            who = "a key with the `metrics` scope, or an admin"
        elif keyed:
            who = "any key or signed-in person"
        else:
            who = "anyone: no key"
        for method in methods - {"HEAD"}:
            found[f"{method} {path}"] = who
    return found


def _schema_text(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " | ".join(_schema_text(s) for s in schema["anyOf"])
    if "enum" in schema:
        return " | ".join(str(v) for v in schema["enum"])
    if schema.get("type") == "array":
        return f"list of {_schema_text(schema.get('items', {}))}"
    return str(schema.get("type", "any"))


def route_entries() -> list[Entry]:
    """Every route of the server: method and path, summary, description, parameters, body, answers."""
    found = []
    who = access()
    for path, operations in openapi()["paths"].items():
        for method, op in operations.items():
            rows = []
            for p in op.get("parameters", []):
                default = p.get("schema", {}).get("default")
                rows.append(
                    f"| {code(p['name'])} | {p['in']} | {cell(_schema_text(p.get('schema', {})))} |"
                    f" {'yes' if p.get('required') else ''} | {'' if default is None else code(str(default))} |"
                    f" {cell(p.get('description', ''))} |"
                )
            details = [f"**Who may call**: {who.get(f'{method.upper()} {path}', 'see the description')}.", ""]
            if rows:
                details += ["| Parameter | In | Type | Required | Default | What it is |", "|---|---|---|---|---|---|"]
                details += rows + [""]
            body = op.get("requestBody")
            if body:
                shown = [f"{code(t)}: {code(_schema_text(c.get('schema', {})))}" for t, c in body["content"].items()]
                details += [f"**Body**{' (required)' if body.get('required') else ''}: {', '.join(shown)}", ""]
            answers = []
            for status, answer in op.get("responses", {}).items():
                schemas = [_schema_text(c.get("schema", {})) for c in answer.get("content", {}).values()]
                what = cell(answer.get("description", ""))
                answers.append(f"`{status}` {what}" + (f" ({', '.join(code(s) for s in schemas)})" if schemas else ""))
            details += ["**Answers**: " + "; ".join(answers), ""]
            found.append(
                Entry(
                    f"{method.upper()} {path}",
                    ", ".join(op.get("tags", [])),
                    op.get("summary", ""),
                    op.get("description", ""),
                    "\n".join(details),
                )
            )
    return found


def api_page() -> str:
    """docs/reference/rest-api.md."""
    out = [
        "# REST API",
        "",
        "Every route of `clearance serve`, grouped by tag. Generated from the server's OpenAPI"
        " document, which the server also serves at `/openapi.json` (its interactive form at `/docs`)."
        " Requests carry a key (`X-API-Key` or `Authorization: Bearer …`) or the dashboard's session;"
        " each route says which scope it needs. Errors answer"
        ' `{"detail": …}` saying what was wrong and where.',
        "",
    ]
    by_tag: dict[str, list[Entry]] = {}
    for e in route_entries():
        by_tag.setdefault(e.kind or "other", []).append(e)
    for tag, entries in by_tag.items():
        out += [f"## {text(tag)}", ""]
        for e in entries:
            out += [f"### {code(e.name)}", "", f"**{text(e.default)}.** {text(e.description)}", "", e.details]
    out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------- the hook

PAGES: dict[str, Callable[[], str]] = {
    "reference/settings.md": settings_page,
    "reference/policy.md": policy_page,
    "reference/cli.md": cli_page,
    "reference/rest-api.md": api_page,
}


def on_config(config: Any) -> Any:
    """MkDocs' hook: document this checkout's `src/`, whatever `clearance` the virtualenv holds.

    (MkDocs restores `sys.path` after loading a hook, so it is set here, not when this loads.)
    """
    source = str(REPO / "src")
    if source not in sys.path:
        sys.path.insert(0, source)
    return config


def on_files(files: Any, config: Any) -> Any:
    """MkDocs' hook: add the generated pages to the site's files."""
    from mkdocs.structure.files import File

    import clearance

    if not Path(clearance.__file__).resolve().is_relative_to(REPO / "src"):
        raise RuntimeError(f"the reference would describe {clearance.__file__}, not {REPO / 'src'}")

    for uri, render in PAGES.items():
        files.append(File.generated(config, uri, content=render()))
    return files
