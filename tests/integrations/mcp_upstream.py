"""A real upstream MCP server for the proxy's tests: `issue_refund` appends each refund to a file.

`python mcp_upstream.py LEDGER [PORT]`: stdio, or streamable HTTP on PORT. Each start appends the
process id to LEDGER.pids; while LEDGER.down exists it exits at once instead (a server that
cannot come back yet).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mcp.server.mcpserver import MCPServer

server = MCPServer("refunds")
LEDGER = Path(sys.argv[1])


@server.tool()
def issue_refund(order_id: str, amount: float) -> str:
    """Refund an order."""
    with LEDGER.open("a") as ledger:
        ledger.write(f"{order_id} {amount}\n")
    return f"refunded {amount} on {order_id}"


@server.tool()
def environment(name: str) -> str:
    """The value of an environment variable here, or <unset>."""
    return os.environ.get(name, "<unset>")


if __name__ == "__main__":
    if LEDGER.with_suffix(".down").exists():
        sys.exit(3)
    with LEDGER.with_suffix(".pids").open("a") as pids:
        pids.write(f"{os.getpid()}\n")
    if len(sys.argv) > 2:  # streamable HTTP on this port
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")
