"""An audit record as the API sends it: an open record, its common fields described."""

from __future__ import annotations

from typing import Any, Required

from pydantic import ConfigDict, GetJsonSchemaHandler, RootModel, TypeAdapter, with_config
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema
from typing_extensions import TypedDict


@with_config(ConfigDict(extra="allow"))
class _Common(TypedDict, total=False):
    """The fields the kinds of record share, where a record has them (the schema, not a check)."""

    seq: Required[int]
    hash: Required[str]
    v: int
    id: str
    kind: str
    at_us: int
    agent: str
    environment: str
    session: str | None
    tool: str | None
    call_id: str
    decision: str
    args: dict[str, Any]
    args_redacted: list[str]
    reason: str
    rule_ids: list[str]
    policy_revision: str
    error: str | None


class AuditEvent(RootModel[dict[str, Any]]):
    """One audit record: its stored fields, then `seq` and `hash`, its place in the hash chain.

    Records are open: each kind adds its own fields, so the schema describes the common ones and
    allows the rest. The API reads a record as it was stored and checks none of it (an older
    version's record, or one the store could not decode, `$unreadable`, is still shown), so its
    fields keep their stored order and values.
    """

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        """The common fields' schema, open to the fields of each kind."""
        schema = TypeAdapter(_Common).json_schema()
        return {**schema, "title": cls.__name__, "description": cls.__doc__.split("\n")[0] if cls.__doc__ else ""}
