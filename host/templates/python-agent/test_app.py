"""Unit tests, on plain CPython (no componentize-py needed):
``python -m unittest``. A stand-in host plays the model and the tools."""

import os
import sys
import unittest
from types import SimpleNamespace

# The SDK is not on PyPI: it is in the warden checkout this project was made
# from (set WARDEN_SDK_PYTHON to use another). Its bytecode is not written
# there.
sys.dont_write_bytecode = True
sys.path.insert(0, os.environ.get("WARDEN_SDK_PYTHON", {{python_sdk_py}}))

from warden_sdk.agent import AgentError, HostError  # noqa: E402

import app  # noqa: E402


def reply(content, *calls):
    """A model reply: text, and tool calls as (name, arguments-json) pairs."""
    tool_calls = [
        SimpleNamespace(id=f"call-{i}", name=name, arguments=arguments)
        for i, (name, arguments) in enumerate(calls)
    ]
    return SimpleNamespace(content=content, tool_calls=tool_calls)


class StandInHost:
    """What the SDK's ``agent`` module provides, without warden: the model
    answers ``turns`` in order; ``tool(name, arguments)`` answers calls."""

    def __init__(self, turns, tool):
        self.turns = list(turns)
        self.tool = tool
        self.sent = []

    def list_tools(self):
        return []

    def chat(self, messages, tools):
        self.sent.append(list(messages))
        return SimpleNamespace(message=self.turns.pop(0))

    def call_tool(self, name, arguments):
        return self.tool(name, arguments)

    system = staticmethod(lambda content: ("system", content))
    user = staticmethod(lambda content: ("user", content))
    assistant = staticmethod(lambda content, calls: ("assistant", content))
    tool_result = staticmethod(lambda call_id, content: ("tool", content))


class AgentTest(unittest.TestCase):
    def test_runs_the_tool_the_model_asks_for_then_answers(self):
        calls = []

        def tool(name, arguments):
            calls.append((name, arguments))
            return "42"

        host = StandInHost([reply("", ("calc", '{"expression": "6 * 7"}')), reply("42")], tool)
        self.assertEqual(app.solve("What is 6 * 7?", host), "42")
        self.assertEqual(calls, [("calc", '{"expression": "6 * 7"}')])

    def test_the_model_reads_a_refusal(self):
        def tool(name, arguments):
            raise HostError("denied", "not granted (rule: default)")

        host = StandInHost([reply("", ("calc", "{}")), reply("I cannot.")], tool)
        self.assertEqual(app.solve("1 / 0?", host), "I cannot.")
        self.assertEqual(
            host.sent[-1][-1], ("tool", "error: denied by policy: not granted (rule: default)")
        )

    def test_gives_up_after_max_steps(self):
        host = StandInHost([reply("", ("calc", "{}"))] * app.MAX_STEPS, lambda n, a: "1")
        with self.assertRaisesRegex(AgentError, "no answer after"):
            app.solve("loop", host)


if __name__ == "__main__":
    unittest.main()
