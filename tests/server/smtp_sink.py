"""A real SMTP server for the e-mail tests: `python smtp_sink.py PORT DIR` keeps every mail in DIR.

Each accepted mail becomes `DIR/<n>.json`: the envelope's sender and recipients and the message
as received, written whole before it appears (a rename), so a reader never sees half of one.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class Keep:
    """aiosmtpd's handler: write each message to the directory."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self.numbers = itertools.count(len(list(where.glob("*.json"))) + 1)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        n = next(self.numbers)
        record = {
            "from": envelope.mail_from,
            "to": list(envelope.rcpt_tos),
            "data": envelope.original_content.decode("utf-8", "surrogateescape"),
        }
        part = self.where / f".{n}.part"
        part.write_text(json.dumps(record))
        os.replace(part, self.where / f"{n:04d}.json")
        return "250 OK"


def main() -> None:
    port, where = int(sys.argv[1]), Path(sys.argv[2])
    where.mkdir(parents=True, exist_ok=True)
    controller = Controller(Keep(where), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    try:
        asyncio.run(asyncio.Event().wait())
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
