"""Drive `warden mcp` with the official MCP Python SDK (the `mcp` package).

Usage: client.py WARDEN_BINARY POLICY AUDIT_LOG [MODE]
       client.py http://127.0.0.1:PORT/mcp [MODE]

Starts `warden mcp` as a stdio server the way MCP clients (Claude Desktop,
IDEs, agent frameworks) do, or connects to one serving streamable HTTP, and
prints one JSON object per line describing
what the client saw: the negotiated version, the tool list, and the results
of a few calls. The Rust integration test reads and checks them.
"""

import asyncio
import json
import sys

from mcp import Client, StdioServerParameters


def emit(what, **fields):
    print(json.dumps({"what": what, **fields}), flush=True)


def result_fields(result):
    return {
        "is_error": bool(result.is_error),
        "text": "".join(getattr(c, "text", "") for c in result.content),
        "structured": result.structured_content,
    }


async def main(server, mode):
    async with Client(server, mode=mode) as client:
        session = client.session
        emit("connected", version=session.protocol_version,
             server=session.server_info.name if session.server_info else None)
        tools = await client.list_tools()
        emit("tools", tools=[
            {"name": t.name, "description": t.description, "schema": t.input_schema}
            for t in tools.tools
        ])
        ok = await client.call_tool("calc", {"expression": "6 * 7"})
        emit("call", tool="calc", **result_fields(ok))
        denied = await client.call_tool("regex_search", {"pattern": "a", "text": "a"})
        emit("call", tool="regex_search", **result_fields(denied))
        invalid = await client.call_tool("calc", {"expression": 42})
        emit("call", tool="calc-invalid", **result_fields(invalid))
        # Several calls at once: answered by id, whatever order they finish in.
        many = await asyncio.gather(*[
            client.call_tool("calc", {"expression": f"{n} * 2"}) for n in range(8)
        ])
        emit("concurrent", texts=[result_fields(r)["text"] for r in many])
        try:
            await client.call_tool("no_such_tool", {})
            emit("unknown", error=None)
        except Exception as error:  # the SDK raises on a JSON-RPC error
            emit("unknown", error=str(error))


if __name__ == "__main__":
    if sys.argv[1].startswith("http"):
        server, rest = sys.argv[1], sys.argv[2:]
    else:
        warden, policy, audit = sys.argv[1:4]
        server = StdioServerParameters(
            command=warden, args=["mcp", "--policy", policy, "--audit", audit]
        )
        rest = sys.argv[4:]
    asyncio.run(main(server, rest[0] if rest else "auto"))
