"""The server's OpenAPI document, for the dashboard's generated types.

`python -m clearance.server._openapi > dashboard/openapi.json` writes it; `npm run types` in
`dashboard/` runs that and `openapi-typescript`, which writes `dashboard/src/api.gen.ts`.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from ._app import create_app
from ._settings import ServerSettings


def document() -> dict[str, Any]:
    """The OpenAPI document of an app built with default settings (nothing is opened)."""
    return create_app(ServerSettings()).openapi()


if __name__ == "__main__":
    json.dump(document(), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
