"""An upstream MCP server for `clearance mcp-proxy`, written for the `mcp` 2.x SDK.

`mcp` 2.x has no `FastMCP`: it is `mcp.server.mcpserver.MCPServer` (same decorators). Run it
behind the proxy over stdio:

    clearance mcp-proxy --upstream "refunds=python examples/mcp/refunds_server.py"

or serve it over streamable HTTP (http://127.0.0.1:8001/mcp) and front that URL:

    python examples/mcp/refunds_server.py --http 8001
    clearance mcp-proxy --upstream refunds=http://127.0.0.1:8001/mcp
"""

from __future__ import annotations

import argparse

from mcp.server.mcpserver import MCPServer

server = MCPServer("refunds")


@server.tool()
def lookup_order(order_id: str) -> str:
    """Look an order up."""
    return f"order {order_id}: shipped"


@server.tool()
def issue_refund(order_id: str, amount: float) -> str:
    """Refund an order (here it only says so)."""
    return f"refunded {amount} on {order_id}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP on 127.0.0.1:PORT")
    port = parser.parse_args().http
    if port is None:
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=port)
