"""`{{tool}}`: a warden tool in Python. It works only on its arguments, so
its policy grants it nothing (no HTTP, files, environment or secrets).

Build with ``sh build.sh``; test with ``python -m unittest``.

componentize-py runs this module's top level once, at build time, and
snapshots the interpreter: import everything here, at the top, and read
anything that changes (the time, files) inside the function.
"""

from warden_sdk.tool import ToolError, ToolWorld, tool

# The longest text accepted (the schema says so too: the host refuses longer
# arguments before the tool runs).
MAX_TEXT = 100_000


@tool(
    name="{{tool}}",
    description="Count the words and characters of a text.",
    parameters={
        "type": "object",
        "properties": {"text": {"type": "string", "maxLength": MAX_TEXT}},
        "required": ["text"],
        "additionalProperties": False,
    },
)
def count(text: str) -> dict:
    """The tool's work: the arguments' members arrive as keyword arguments."""
    if not text.strip():
        # The agent reads: tool `{{tool}}` returned an error: `text` is empty
        raise ToolError("`text` is empty")
    return {"words": len(text.split()), "characters": len(text)}


class WitWorld(ToolWorld):
    """The component's exports, `describe` and `invoke` (componentize-py
    looks for a class named `WitWorld`)."""
