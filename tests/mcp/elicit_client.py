"""Answer warden's asks as an MCP client's person, with the official MCP
Python SDK's elicitation callback.

Usage: elicit_client.py WARDEN_BINARY POLICY AUDIT_LOG ANSWER...
       elicit_client.py http://127.0.0.1:PORT/mcp ANSWER...

(the second form connects to a `warden mcp --http` over streamable HTTP:
warden's questions come as events on each call's stream, and the SDK
POSTs the callback's answers back with the session's id).

Each ANSWER (`once`, `run`, `deny`, `decline`, `cancel`) answers the next
`elicitation/create` warden sends; one `calc` call is made per answer, one
after another. Prints one JSON object per line: each question warden asked
(its message and schema) and each call's result.
"""

import asyncio
import json
import sys

from mcp import Client, StdioServerParameters
from mcp import types


def emit(what, **fields):
    print(json.dumps({"what": what, **fields}), flush=True)


async def main(server, answers):
    queue = list(answers)

    async def person(context, params):
        answer = queue.pop(0)
        emit("asked", message=params.message,
             schema=params.requested_schema if hasattr(params, "requested_schema") else None)
        if answer in ("decline", "cancel"):
            return types.ElicitResult(action=answer)
        return types.ElicitResult(action="accept", content={"answer": answer})

    async with Client(server, elicitation_callback=person) as client:
        for n, _ in enumerate(answers):
            result = await client.call_tool("calc", {"expression": f"{n + 1} * 7"})
            emit("call", is_error=bool(result.is_error),
                 text="".join(getattr(c, "text", "") for c in result.content))


if __name__ == "__main__":
    if sys.argv[1].startswith("http"):
        server, answers = sys.argv[1], sys.argv[2:]
    else:
        warden, policy, audit = sys.argv[1:4]
        server = StdioServerParameters(
            command=warden, args=["mcp", "--policy", policy, "--audit", audit]
        )
        answers = sys.argv[4:]
    asyncio.run(main(server, answers))
