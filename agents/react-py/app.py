"""`react-py`: the ReAct agent loop of ``agents/react`` in Python.

Send the task and the granted tools to the model; run every tool call the
model asks for through the host; feed each result back (a refusal too, as
text the model can read and work around); stop at the first answer with no
tool calls, or after ``MAX_STEPS`` model turns. Same prompt, messages and
errors as the Rust agent, so one scripted model file drives both.

The agent holds no authority of its own: what the model may ask for is
decided by the host's policy on every call, whatever this loop does.

Build (from the repository root)::

    componentize-py -d guest-sdk/wit -w agent componentize \\
        -p agents/react-py -p guest-sdk/python app -o react-py.wasm
"""

from warden_sdk import agent, log
from warden_sdk.agent import AgentError, HostError

# Model turns before the agent gives up.
MAX_STEPS = 12

SYSTEM_PROMPT = (
    "You are a careful assistant working inside a sandbox. "
    "Use the tools you are given when they help; call several at once when they are independent. "
    "A tool result that starts with `error:` means the call did not happen; read the reason and "
    "adapt (another tool, other arguments, or answer without it). Do not ask for tools you were "
    "not given. When you have the answer, reply with it and call no tools."
)


class WitWorld(agent.AgentWorld):
    """The component's export ``run``."""

    def answer(self, task: str) -> str:
        tools = agent.list_tools()
        log.info(f"starting with {len(tools)} tool(s): {', '.join(t.name for t in tools)}")
        messages = [agent.system(SYSTEM_PROMPT), agent.user(task)]

        for step in range(1, MAX_STEPS + 1):
            try:
                response = agent.chat(messages, tools)
            except HostError as e:
                if e.kind == "budget-exhausted":
                    raise AgentError(
                        f"stopped after {step - 1} model turn(s): "
                        f"the model budget is spent ({e.reason})"
                    ) from None
                raise AgentError(f"the model call failed: {e.describe()}") from None
            reply = response.message
            if not reply.tool_calls:
                return reply.content
            messages.append(agent.assistant(reply.content, reply.tool_calls))
            for call in reply.tool_calls:
                try:
                    content = agent.call_tool(call.name, call.arguments)
                except HostError as e:
                    text = e.describe()
                    log.warn(f"tool `{call.name}`: {text}")
                    content = f"error: {text}"
                messages.append(agent.tool_result(call.id, content))

        raise AgentError(f"no final answer after {MAX_STEPS} model turns (the agent's step limit)")
