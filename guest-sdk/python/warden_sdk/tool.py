"""Declare tools with a decorator and export them as the ``tool`` world.

A tool component (``app.py``)::

    from warden_sdk.tool import ToolWorld, tool

    @tool(
        description="Upper-case a text.",
        parameters={
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
            "additionalProperties": False,
        },
    )
    def upper(text: str) -> str:
        return text.upper()

    class WitWorld(ToolWorld):
        '''The component's exports: ``describe`` and ``invoke``.'''

Build it with ``componentize-py -d guest-sdk/wit -w tool componentize
-p DIR -p guest-sdk/python app -o upper.wasm``.

How a call runs (``invoke(name, arguments)``):

- the host has already checked ``arguments`` against the tool's JSON Schema
  and the policy; the function is called with the JSON object's members as
  keyword arguments (so Python defaults fill in what the caller left out);
- a ``str`` result is returned as is; anything else is JSON-encoded;
- failures come back to the caller as the WIT ``err`` text: ``unknown tool
  `x` ...``, ``arguments are not a JSON object``, ``bad arguments: ...``;
  a :class:`ToolError` or ``ValueError`` (or ``componentize_py_types.Err``)
  raised by the function gives its own message, any other exception
  ``TypeName: message``.
"""

import inspect
import json
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from . import _wit

__all__ = ["Tool", "ToolError", "ToolWorld", "call", "registered", "tool"]


class ToolError(Exception):
    """Raise from a tool to fail the call with exactly this message."""


@dataclass(frozen=True)
class Tool:
    """A declared tool: what ``describe`` reports and what ``invoke`` runs."""

    name: str
    description: str
    parameters: Dict[str, Any]
    function: Callable[..., Any]


_TOOLS: Dict[str, Tool] = {}

_NO_PARAMETERS = {"type": "object", "properties": {}, "additionalProperties": False}


def tool(
    function: Optional[Callable[..., Any]] = None,
    *,
    name: Optional[str] = None,
    description: Optional[str] = None,
    parameters: Optional[Dict[str, Any]] = None,
):
    """Declare ``function`` as a tool of this component.

    ``name`` defaults to the function's name, ``description`` to its
    docstring; ``parameters`` is the JSON Schema of the arguments object
    (default: no arguments). Usable bare (``@tool``) or with arguments.
    Returns the function unchanged, so it stays callable from Python.
    """

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        tool_name = name or fn.__name__
        text = description if description is not None else inspect.getdoc(fn)
        if not text:
            raise ValueError(f"tool `{tool_name}` needs a description (argument or docstring)")
        if tool_name in _TOOLS:
            raise ValueError(f"tool `{tool_name}` is declared twice")
        schema = _NO_PARAMETERS if parameters is None else parameters
        if not isinstance(schema, dict):
            raise TypeError(f"tool `{tool_name}`: parameters must be a JSON Schema object (a dict)")
        json.dumps(schema)  # fail at build time, not at describe time
        _TOOLS[tool_name] = Tool(tool_name, text, schema, fn)
        return fn

    if function is not None:
        return register(function)
    return register


def registered() -> List[Tool]:
    """The tools declared so far, in declaration order."""
    return list(_TOOLS.values())


def call(name: str, arguments: str) -> str:
    """Run the tool ``name`` with JSON ``arguments``; return its result text.

    Raises :class:`ToolError` with the message the caller should see.
    This is ``invoke`` without the WIT plumbing (handy in unit tests).
    """
    found = _TOOLS.get(name)
    if found is None:
        provided = ", ".join(f"`{t}`" for t in _TOOLS) or "nothing"
        raise ToolError(f"unknown tool `{name}` (this component provides {provided})")
    try:
        args = json.loads(arguments) if arguments.strip() else {}
    except ValueError as e:
        raise ToolError(f"`{name}`: arguments are not valid JSON: {e}") from None
    if not isinstance(args, dict):
        raise ToolError(f"`{name}`: arguments are not a JSON object")
    try:
        bound = inspect.signature(found.function).bind(**args)
    except TypeError as e:
        raise ToolError(f"`{name}`: bad arguments: {e}") from None
    try:
        result = found.function(*bound.args, **bound.kwargs)
    except (ToolError, ValueError) as e:
        raise ToolError(str(e) or type(e).__name__) from None
    except Exception as e:  # noqa: BLE001 - every failure goes back as text
        if _wit.Err is not None and isinstance(e, _wit.Err):
            raise ToolError(str(e.value)) from None
        raise ToolError(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from None
    if isinstance(result, str):
        return result
    try:
        return json.dumps(result, ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise ToolError(f"`{name}` returned a value that is not JSON: {e}") from None


class ToolWorld:
    """The ``tool`` world's exports over the tools declared with :func:`tool`.

    In the component's main module write ``class WitWorld(ToolWorld): ...``
    (componentize-py looks for a class named ``WitWorld``).
    """

    def describe(self):
        """The declared tools, as ``tool-spec`` records."""
        types = _wit.need(_wit.types, "the `types` interface")
        return [
            types.ToolSpec(t.name, t.description, json.dumps(t.parameters, separators=(",", ":")))
            for t in _TOOLS.values()
        ]

    def invoke(self, name: str, arguments: str) -> str:
        """Run a tool; a failure becomes the WIT ``err`` with its message."""
        try:
            return call(name, arguments)
        except ToolError as e:
            raise _wit.need(_wit.Err, "componentize_py_types.Err")(str(e)) from None
