"""The base of every model the server sends."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

SENT = ConfigDict(json_schema_serialization_defaults_required=True)
"""The configuration of what the server sends: every field is in its JSON, so the schema marks each required."""


class Sent(BaseModel):
    """A model the server sends: every field is in its JSON, so the schema marks each required.

    Clients still accept a field left out (its default applies when they validate).
    """

    model_config = SENT
