"""Helpers for agents: the ``agent`` world's model and tools imports.

The raw bindings (``wit_world.imports.model`` / ``tools``) report a refusal
by raising ``componentize_py_types.Err`` carrying a WIT ``error`` variant;
the functions here raise :class:`HostError` instead, with the variant's kind
and the host's reason. An agent (``app.py``)::

    from warden_sdk import agent, log

    class WitWorld(agent.AgentWorld):
        def answer(self, task: str) -> str:
            tools = agent.list_tools()
            log.info(f"{len(tools)} tool(s)")
            reply = agent.chat([agent.user(task)], tools=tools)
            return reply.message.content

Build it with ``componentize-py -d guest-sdk/wit -w agent componentize
-p DIR -p guest-sdk/python app -o agent.wasm``.
"""

import json
from typing import Any, Dict, List, Optional, Sequence, Union

from . import _wit

__all__ = [
    "AgentError",
    "AgentWorld",
    "HostError",
    "assistant",
    "call_tool",
    "chat",
    "declare_plan",
    "limits",
    "list_tools",
    "system",
    "tool_result",
    "user",
]

# WIT variant case -> (kind, how `describe` reads), as in the Rust SDK.
_KINDS = {
    "Error_Denied": ("denied", "denied by policy"),
    "Error_BudgetExhausted": ("budget-exhausted", "budget exhausted"),
    "Error_Invalid": ("invalid", "invalid request"),
    "Error_Failed": ("failed", "failed"),
}


class HostError(Exception):
    """The host did not (or could not) do what the agent asked.

    ``kind`` is ``"denied"``, ``"budget-exhausted"``, ``"invalid"`` or
    ``"failed"``; ``reason`` is the host's text (it names the policy rule
    when there is one). ``str(error)`` is :meth:`describe`.
    """

    def __init__(self, kind: str, reason: str):
        super().__init__(kind, reason)
        self.kind = kind
        self.reason = reason

    def describe(self) -> str:
        """One line for a model or a person, e.g. ``denied by policy: ...``."""
        what = {k: w for k, w in _KINDS.values()}.get(self.kind, self.kind)
        return f"{what}: {self.reason}"

    def __str__(self) -> str:
        return self.describe()

    @classmethod
    def from_wit(cls, error: Any) -> "HostError":
        """Convert a WIT ``error`` value (``Error_Denied(...)``, ...)."""
        kind, _ = _KINDS.get(type(error).__name__, ("failed", ""))
        return cls(kind, str(getattr(error, "value", error)))


class AgentError(Exception):
    """Raise from :meth:`AgentWorld.answer` to end the run with this error."""


def _host_call(function, *args):
    try:
        return function(*args)
    except _wit.Err as e:
        raise HostError.from_wit(e.value) from None


def list_tools() -> List[Any]:
    """The tools the policy grants, as ``tool-spec`` records (``name``,
    ``description``, ``parameters_schema``)."""
    return _wit.need(_wit.tools, "the `tools` import").list_tools()


def call_tool(name: str, arguments: Union[str, Dict[str, Any]]) -> str:
    """Call a granted tool with JSON arguments (text, or a dict to encode).

    Returns the tool's result text; raises :class:`HostError` when the
    policy refuses the call or the tool fails.
    """
    tools = _wit.need(_wit.tools, "the `tools` import")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return _host_call(tools.call, name, arguments)


def declare_plan(names: Sequence[str]) -> None:
    """Declare the plan: the tools with effects this run will use.

    The host accepts one plan, and only while the session carries no label
    (before the agent has read anything labeled); otherwise it raises
    :class:`HostError` kind ``denied``. Once the session is labeled, a tool
    with effects outside the plan is refused. A name that is not a granted
    tool: kind ``invalid``. Whether the policy requires a plan:
    :func:`limits`.
    """
    tools = _wit.need(_wit.tools, "the `tools` import")
    _host_call(tools.declare_plan, [str(n) for n in names])


def limits():
    """The run's limits as the policy sets them: a ``run-limits`` record
    with ``max_steps`` and ``max_model_calls`` (``None`` where unset) and
    ``plan_required``."""
    return _wit.need(_wit.limits, "the `limits` import").get()


def chat(
    messages: Sequence[Any],
    tools: Sequence[Any] = (),
    *,
    model: Optional[str] = None,
    max_tokens: Optional[int] = None,
    temperature: Optional[float] = None,
):
    """Send a chat request through the host; returns its ``chat-response``
    (``.message``, ``.usage``, ``.finish_reason``, ``.model``).

    ``model`` ``None`` means the run's default. Raises :class:`HostError`
    (e.g. kind ``budget-exhausted`` when the model budget is spent).
    """
    wit_model = _wit.need(_wit.model, "the `model` import")
    request = wit_model.ChatRequest(list(messages), list(tools), model, max_tokens, temperature)
    return _host_call(wit_model.chat, request)


def _message(role: str, content: str, tool_calls=(), tool_call_id=None):
    types = _wit.need(_wit.types, "the `types` interface")
    return types.Message(types.Role[role], content, list(tool_calls), tool_call_id)


def system(content: str):
    """A system message."""
    return _message("SYSTEM", content)


def user(content: str):
    """A user message."""
    return _message("USER", content)


def assistant(content: str, tool_calls: Sequence[Any] = ()):
    """An assistant message, possibly asking for tool calls."""
    return _message("ASSISTANT", content, tool_calls)


def tool_result(call_id: str, content: str):
    """The result of the tool call ``call_id``, for the model to read."""
    return _message("TOOL", content, (), call_id)


class AgentWorld:
    """The ``agent`` world's export ``run`` over a method :meth:`answer`.

    Subclass it as ``WitWorld`` (the class componentize-py looks for) and
    implement ``answer(task) -> str``. An :class:`AgentError` ends the run
    with its message; an uncaught :class:`HostError` with its description;
    any other exception with ``TypeName: message`` (instead of a trap).
    """

    def answer(self, task: str) -> str:
        """Work on ``task``; return the final answer."""
        raise NotImplementedError("implement `answer(self, task)` in WitWorld")

    def run(self, task: str) -> str:
        """The export: run :meth:`answer`, turning failures into WIT ``err``."""
        Err = _wit.need(_wit.Err, "componentize_py_types.Err")
        try:
            return self.answer(task)
        except Err:
            raise
        except (AgentError, HostError) as e:
            raise Err(str(e)) from None
        except Exception as e:  # noqa: BLE001 - report, do not trap
            raise Err(f"{type(e).__name__}: {e}") from None
