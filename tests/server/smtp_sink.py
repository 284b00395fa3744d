"""A real SMTP server for the e-mail tests: `python smtp_sink.py PORT DIR` keeps every mail in DIR.

Each accepted mail becomes `DIR/<n>.json`: the envelope's sender and recipients and the message
as received, written whole before it appears (a rename), so a reader never sees half of one.

Faults a mail server can have, on request: `--drop N` keeps each of the first N mails and then
drops the connection instead of answering (the sender cannot know it was accepted);
`--quit-reply "421 …"` answers QUIT with that instead of 221.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class Keep:
    """aiosmtpd's handler: write each message to the directory."""

    def __init__(self, where: Path, *, drop: int = 0, quit_reply: str | None = None) -> None:
        self.where, self.drop, self.quit_reply = where, drop, quit_reply
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
        if self.drop > 0:  # kept, but the answer never reaches the sender
            self.drop -= 1
            server.transport.abort()
        return "250 OK"

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        return self.quit_reply or "221 Bye"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("where", type=Path)
    parser.add_argument("--drop", type=int, default=0)
    parser.add_argument("--quit-reply")
    args = parser.parse_args()
    args.where.mkdir(parents=True, exist_ok=True)
    handler = Keep(args.where, drop=args.drop, quit_reply=args.quit_reply)
    controller = Controller(handler, hostname="127.0.0.1", port=args.port)
    controller.start()
    print("ready", flush=True)
    try:
        asyncio.run(asyncio.Event().wait())
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
