"""`{{name}}`: a warden agent in Python. It sends the task and the granted
tools to the model, runs the tool calls the model asks for, feeds each
result back (a refusal too, as text the model can read), and stops at the
first reply with no tool calls.

It holds no authority of its own: the host's policy decides every model
call and every tool call, whatever this loop does.

Build with ``sh build.sh``; test with ``python -m unittest``.
"""

from warden_sdk import agent, log
from warden_sdk.agent import AgentError, HostError

# Model turns before the agent gives up.
MAX_STEPS = 8

SYSTEM_PROMPT = (
    "You are a careful assistant working inside a sandbox. "
    "Use the tools you are given when they help. A tool result that starts with `error:` "
    "means the call did not happen: read the reason and adapt. When you have the answer, "
    "reply with it and call no tools."
)


def solve(task: str, host=agent) -> str:
    """The loop. ``host`` is the SDK's ``agent`` module (the model and the
    tools, through warden); a test passes a stand-in."""
    tools = host.list_tools()
    messages = [host.system(SYSTEM_PROMPT), host.user(task)]
    for _ in range(MAX_STEPS):
        try:
            reply = host.chat(messages, tools).message
        except HostError as e:
            raise AgentError(f"the model call failed: {e.describe()}") from None
        if not reply.tool_calls:
            return reply.content
        messages.append(host.assistant(reply.content, reply.tool_calls))
        for call in reply.tool_calls:
            try:
                content = host.call_tool(call.name, call.arguments)
            except HostError as e:
                # A refusal is a value: the model reads why and adapts.
                content = f"error: {e.describe()}"
            messages.append(host.tool_result(call.id, content))
    raise AgentError(f"no answer after {MAX_STEPS} model turns")


class WitWorld(agent.AgentWorld):
    """The component's export ``run`` (componentize-py looks for a class
    named ``WitWorld``)."""

    def answer(self, task: str) -> str:
        log.info("starting")
        return solve(task)
