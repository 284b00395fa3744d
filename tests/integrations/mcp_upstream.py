"""A real upstream MCP server for the proxy's tests: `issue_refund` appends each refund to a file."""

from __future__ import annotations

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


if __name__ == "__main__":
    if len(sys.argv) > 2:  # streamable HTTP on this port
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")
