"""Drive warden's `python` tool with the official MCP Python SDK (`mcp`).

Usage: python_tool.py WARDEN_BINARY POLICY AUDIT_LOG   (stdio: one session)
       python_tool.py http://127.0.0.1:PORT/mcp        (HTTP: two sessions)

Prints one JSON object per line with what the client saw; the Rust
integration test (tests/integration/mcp_python.rs) checks them. The policy
grants `python` with `instance = "per-run"` and denies `calc`.
"""

import asyncio
import json
import sys

from mcp import Client, StdioServerParameters


def emit(what, **fields):
    print(json.dumps({"what": what, **fields}), flush=True)


def seen(result):
    text = "".join(getattr(c, "text", "") for c in result.content)
    return {"is_error": bool(result.is_error), "text": text}


async def run(client, code):
    return seen(await client.call_tool("python", {"code": code}))


async def one_session(server):
    async with Client(server) as client:
        tools = await client.list_tools()
        emit("tools", names=sorted(t.name for t in tools.tools))
        emit("computed", **await run(client, "total = sum(range(10))\nprint('sum is', total)\ntotal * 2"))
        emit("denied", **seen(await client.call_tool("calc", {"expression": "1 + 1"})))
        emit("set", **await run(client, "x = 41"))
        emit("kept", **await run(client, "x + 1"))


async def two_sessions(url):
    async with Client(url) as first, Client(url) as second:
        emit("first-set", **await run(first, "x = 41"))
        emit("second-reads", **await run(second, "x"))
        emit("first-reads", **await run(first, "x + 1"))


if __name__ == "__main__":
    if sys.argv[1].startswith("http"):
        asyncio.run(two_sessions(sys.argv[1]))
    else:
        warden, policy, audit = sys.argv[1:4]
        server = StdioServerParameters(
            command=warden, args=["mcp", "--policy", policy, "--audit", audit]
        )
        asyncio.run(one_session(server))
