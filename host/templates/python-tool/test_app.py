"""Unit tests, on plain CPython (no componentize-py needed):
``python -m unittest``."""

import os
import sys
import unittest

# The SDK is not on PyPI: it is in the warden checkout this project was made
# from (set WARDEN_SDK_PYTHON to use another). Its bytecode is not written
# there.
sys.dont_write_bytecode = True
sys.path.insert(0, os.environ.get("WARDEN_SDK_PYTHON", {{python_sdk_py}}))

from warden_sdk.tool import ToolError, call, registered  # noqa: E402

import app  # noqa: E402,F401  (declares the tools)


class ToolTest(unittest.TestCase):
    def test_counts_words_and_characters(self):
        self.assertEqual(app.count("hello warden"), {"words": 2, "characters": 12})
        # `call` is what the component's `invoke` runs.
        self.assertEqual(
            call("{{tool}}", '{"text": "hello warden"}'), '{"words": 2, "characters": 12}'
        )

    def test_refuses_empty_text(self):
        with self.assertRaisesRegex(ToolError, "is empty"):
            call("{{tool}}", '{"text": "  "}')

    def test_describes_one_tool(self):
        self.assertEqual([t.name for t in registered()], ["{{tool}}"])


if __name__ == "__main__":
    unittest.main()
