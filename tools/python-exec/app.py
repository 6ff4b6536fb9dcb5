"""`python-exec`: a code interpreter as a warden tool (componentize-py).

One tool, ``python``: run a snippet of Python in a fresh namespace and
return what it printed, the value of its last expression (as ``repr``)
and the error it raised, if any. It runs inside the tool's own instance:
no files, network, environment or clock beyond what the policy grants the
tool (with an ``fs`` grant it sees that directory; with ``http`` its
requests go through warden's egress rules), and the policy's memory, CPU,
wall and output limits bound every call. Under ``instance = "per-call"``
(the default) nothing survives between calls: each call is a fresh
instance. Under ``instance = "per-run"`` warden keeps one instance for the
run, and the names a call defines are there in the next (one namespace,
as in a notebook), until a limit resets the instance.

Build (from the repository root)::

    componentize-py -d guest-sdk/wit -w tool-http componentize \\
        -p tools/python-exec -p guest-sdk/python app -o python-exec.wasm
"""

import ast
import contextlib
import io
import traceback

from warden_sdk import http
from warden_sdk.tool import ToolWorld, tool

# The longest snippet accepted, in characters.
MAX_CODE = 100_000

# The names the snippets define: empty in every fresh instance (the module
# runs when the component is built, and each instance starts from that
# snapshot), kept between calls only when warden keeps the instance.
# `http_request` is `warden_sdk.http.request`: the host makes the request if
# the tool's `http` grant allows it (and raises `HttpError` if not).
NAMESPACE = {"__name__": "__main__", "http_request": http.request, "HttpError": http.HttpError}


@tool(
    description="Run a Python snippet (standard library only) and return its "
    "printed output, the value of its last expression and any error. "
    "`http_request(url, method='GET', headers=None, body=None)` returns a response "
    "with .status, .headers, .body, .text() and .json(), for the URLs the policy grants; "
    "sockets and urllib do not work.",
    parameters={
        "type": "object",
        "properties": {"code": {"type": "string", "maxLength": MAX_CODE}},
        "required": ["code"],
        "additionalProperties": False,
    },
)
def python(code: str) -> dict:
    """stdout (and stderr), the last expression's ``repr``, the error."""
    if len(code) > MAX_CODE:
        raise ValueError(f"the code is {len(code)} characters; at most {MAX_CODE}")
    printed = io.StringIO()
    namespace = NAMESPACE
    value = None
    error = None
    try:
        tree = ast.parse(code, "<code>", "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            exec(compile(tree, "<code>", "exec"), namespace)
            if last is not None:
                result = eval(compile(last, "<code>", "eval"), namespace)
                if result is not None:
                    value = repr(result)
    except BaseException as caught:  # SystemExit and KeyboardInterrupt too
        error = "".join(traceback.format_exception_only(type(caught), caught)).strip()
    return {"stdout": printed.getvalue(), "value": value, "error": error}


class WitWorld(ToolWorld):
    """The component's exports: ``describe`` and ``invoke`` over the tool above."""
