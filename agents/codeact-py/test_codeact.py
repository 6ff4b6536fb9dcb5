"""Unit tests of the code agent's machinery on plain CPython (no Wasm):
``python3 -m unittest discover -s agents/codeact-py``. The agent itself,
in its sandbox, is tested by tests/integration/codeact.rs."""

import json
import time
import unittest
from types import SimpleNamespace

import codeact


class Refused(Exception):
    """What warden_sdk's HostError looks like to the tool functions."""

    def __init__(self, kind, reason):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def spec(name, schema, description="A tool."):
    return SimpleNamespace(name=name, description=description, parameters_schema=json.dumps(schema))


CALC = spec(
    "calc",
    {
        "type": "object",
        "properties": {
            "expression": {"type": "string", "description": "What to compute."},
            "precision": {"type": "integer", "default": 6},
        },
        "required": ["expression"],
        "additionalProperties": False,
    },
    "Compute an arithmetic expression.",
)


class Host:
    """Records the calls; answers from a table, refuses `pay`."""

    def __init__(self):
        self.calls = []

    def __call__(self, name, arguments):
        self.calls.append((name, json.loads(arguments)))
        if name == "pay":
            raise Refused("denied", "`account` must come from task (rule: tools.pay.args.account)")
        if name == "calc":
            return json.dumps(len(self.calls))
        return "plain text, not JSON"


class ExtractCode(unittest.TestCase):
    def test_python_blocks_are_code_other_text_is_an_answer(self):
        self.assertEqual(codeact.extract_code("Thinking.\n```python\nx = 1\n```\n"), "x = 1")
        self.assertEqual(codeact.extract_code("```py\na\n```\nand\n```Python3\nb\n```"), "a\n\nb")
        self.assertIsNone(codeact.extract_code("The answer is 4."))
        self.assertIsNone(codeact.extract_code("```bash\nls\n```"))
        self.assertIsNone(codeact.extract_code(""))
        self.assertIsNone(codeact.extract_code("```python\nunclosed"))
        self.assertEqual(codeact.extract_code("```\nshown\n```\n```python\nrun\n```"), "run")
        # Fences pair up in order, in one pass: 200,000 of them take no
        # more than their length (a scan per opening fence would not end).
        started = time.monotonic()
        many = codeact.extract_code("```python\nx = 1\n" * 200_001)
        self.assertEqual(many.count("x = 1"), 100_000)
        self.assertLess(time.monotonic() - started, 5)


class ToolFunctions(unittest.TestCase):
    def test_keyword_arguments_are_checked_and_sent_as_json(self):
        host = Host()
        session = codeact.Session([CALC], host)
        calc = session.namespace["calc"]
        self.assertEqual(calc(expression="1 + 1"), 1, "a JSON result comes back parsed")
        self.assertEqual(host.calls, [("calc", {"expression": "1 + 1"})])
        with self.assertRaisesRegex(TypeError, "missing required argument.*expression"):
            calc(precision=2)
        with self.assertRaisesRegex(TypeError, "keyword arguments only"):
            calc("1 + 1")
        with self.assertRaisesRegex(TypeError, "unexpected argument 'mode'"):
            calc(expression="1", mode="x")
        with self.assertRaisesRegex(TypeError, "cannot be sent as JSON"):
            calc(expression=object())
        self.assertEqual(len(host.calls), 1, "no refused argument list reached the host")
        self.assertIn("expression (str, required): What to compute.", calc.__doc__)
        self.assertIn("def calc(*, expression: str, precision: int = None) -> Any:", session.tool_listing())

    def test_a_refusal_is_an_exception_the_code_can_catch(self):
        pay = spec("pay", {"type": "object", "properties": {"account": {"type": "string"}}})
        session = codeact.Session([pay], Host())
        outcome = session.execute(
            "try:\n    pay(account='X')\nexcept ToolDenied as e:\n    print('refused:', e.reason)\n",
            1,
        )
        self.assertIsNone(outcome.error)
        self.assertIn("refused: `account` must come from task", outcome.stdout)
        uncaught = session.execute("pay(account='X')", 2)
        self.assertTrue(uncaught.error.startswith("codeact.ToolDenied: tool `pay`: denied by policy"), uncaught.error)
        self.assertIn("(line 1)", uncaught.error)

    def test_names_that_are_not_identifiers_or_are_reserved_are_renamed(self):
        odd = spec("final_answer", {"type": "object", "properties": {"from": {}, "a-b": {}}})
        other = spec("my-tool", {"type": "object"})
        session = codeact.Session([odd, other], Host())
        self.assertIn("final_answer_tool", session.namespace)
        self.assertIn("my_tool", session.namespace)
        self.assertNotEqual(session.namespace["final_answer"], session.namespace["final_answer_tool"])
        listing = session.tool_listing()
        self.assertIn('from_ (Any, optional) [JSON name "from"]', listing)
        self.assertIn('a_b (Any, optional) [JSON name "a-b"]', listing)

    def test_a_broken_schema_still_gives_a_function(self):
        broken = SimpleNamespace(name="x", description="", parameters_schema="{not json")
        session = codeact.Session([broken], Host())
        self.assertEqual(session.namespace["x"](anything=1), "plain text, not JSON")


class Execute(unittest.TestCase):
    def test_output_value_and_state_across_steps(self):
        session = codeact.Session([], Host())
        first = session.execute("total = sum(range(10))\nprint('sum', total)\ntotal * 2", 1)
        self.assertEqual((first.stdout, first.value, first.error), ("sum 45\n", "90", None))
        second = session.execute("total + 1", 2)
        self.assertEqual(second.value, "46", "variables persist between steps")
        self.assertIn("value: 46", second.observation(2))

    def test_errors_are_observations(self):
        session = codeact.Session([], Host())
        syntax = session.execute("def f(:\n  pass", 1)
        self.assertIn("SyntaxError", syntax.error)
        for code, name in [("1 / 0", "ZeroDivisionError"), ("raise SystemExit(3)", "SystemExit"),
                           ("import sys\nsys.exit()", "SystemExit"), ("undefined_name", "NameError")]:
            self.assertIn(name, session.execute(code, 2).error, code)

    def test_output_and_values_are_bounded(self):
        session = codeact.Session([], Host())
        flood = session.execute("for _ in range(100):\n    print('x' * 1_000_000)", 1)
        self.assertEqual(len(flood.stdout), codeact.MAX_STDOUT)
        self.assertEqual(flood.stdout_dropped, 100 * 1_000_001 - codeact.MAX_STDOUT)
        self.assertIn("printed output cut at", flood.observation(1))
        big = session.execute("'y' * 10_000_000", 2)
        self.assertLessEqual(len(big.value), codeact.MAX_VALUE)
        deep = session.execute("[list(range(1000)) for _ in range(1000)]", 3)
        self.assertLessEqual(len(deep.value), codeact.MAX_VALUE)
        hostile = session.execute("class H:\n    def __repr__(self):\n        raise ValueError\nH()", 4)
        self.assertIn("H instance", hostile.value, "a failing __repr__ is not an error")
        huge = session.execute("10 ** 100_000", 5)
        self.assertTrue(huge.value is None or len(huge.value) <= codeact.MAX_VALUE, huge.value)

    def test_final_answer_ends_even_through_except_exception(self):
        session = codeact.Session([], Host())
        done = session.execute("try:\n    final_answer(42)\nexcept Exception:\n    print('caught')\n", 1)
        self.assertTrue(done.finished)
        self.assertEqual(codeact.answer_text(done.final), "42")
        self.assertEqual(done.stdout, "")
        self.assertEqual(codeact.answer_text({"a": [1]}), '{"a": [1]}')
        self.assertFalse(session.execute("x = 1", 2).finished, "a later step starts unfinished")


if __name__ == "__main__":
    unittest.main()
