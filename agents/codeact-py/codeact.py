"""The code agent's machinery, apart from the WIT world (so plain CPython
can test it): the granted tools as Python functions, the model's code run
in one namespace per run with bounded output, and the observation the
model reads next.

What this module must never do: let a model's exception, output or value
escape unbounded or crash the loop. It is not a security boundary: the
model's code runs in this interpreter and can reach anything the agent can
(see docs/code-agents.md, "What the model's code can reach"); the host's
gate is what decides every effect.
"""

import ast
import builtins
import contextlib
import inspect
import io
import json
import keyword
import re
import reprlib
import traceback

# Characters of printed output the model sees per step; the rest is counted
# and dropped as it is written, so printing 100 MB never holds 100 MB.
MAX_STDOUT = 8_000
# Characters of the last expression's value and of an exception's text.
MAX_VALUE = 2_000
MAX_ERROR = 2_000
# Characters of one tool description or parameter description in the prompt.
MAX_DESCRIPTION = 600
# Characters of one code block the agent will run.
MAX_CODE = 100_000

# Names the agent puts in the namespace; a tool with one of these names is
# renamed (`<name>_tool`) so it cannot shadow them.
RESERVED = {
    "final_answer",
    "tools",
    "ToolError",
    "ToolDenied",
    "ToolBudgetExhausted",
    "ToolInvalid",
    "ToolFailed",
}

# The tags of a fenced block that is code to run.
_PYTHON_TAGS = ("python", "py", "python3")


class ToolError(Exception):
    """A tool call did not happen or failed. ``tool`` is the tool's name,
    ``kind`` the host's kind (``denied``, ``budget-exhausted``, ``invalid``,
    ``failed``), ``reason`` the host's text (it names the policy rule)."""

    def __init__(self, tool, kind, reason):
        super().__init__(f"tool `{tool}`: {_KIND_TEXT.get(kind, kind)}: {reason}")
        self.tool = tool
        self.kind = kind
        self.reason = reason


class ToolDenied(ToolError):
    """The policy refused the call."""


class ToolBudgetExhausted(ToolError):
    """A budget in the policy is spent (calls, steps, time)."""


class ToolInvalid(ToolError):
    """The host refused the arguments (e.g. outside the tool's schema)."""


class ToolFailed(ToolError):
    """The call was allowed and the tool failed."""


_KIND_TEXT = {
    "denied": "denied by policy",
    "budget-exhausted": "budget exhausted",
    "invalid": "invalid request",
    "failed": "failed",
}
_KIND_CLASS = {
    "denied": ToolDenied,
    "budget-exhausted": ToolBudgetExhausted,
    "invalid": ToolInvalid,
    "failed": ToolFailed,
}


class _FinalAnswer(BaseException):
    """Raised by ``final_answer`` to leave the model's code at once; a
    BaseException so that ``except Exception`` in that code does not stop it."""


def extract_code(text):
    """The Python code in a model's reply: every ```python block, in order,
    joined; ``None`` when there is none (the reply is then the answer)."""
    text = text or ""
    blocks = []
    at = 0
    # Fences pair up in order, as in Markdown; one pass over the text (a
    # reply full of unclosed fences costs no more than its length).
    while True:
        start = text.find("```", at)
        if start < 0:
            break
        end = text.find("```", start + 3)
        if end < 0:
            break
        tag, newline, body = text[start + 3 : end].partition("\n")
        if newline and tag.strip().lower() in _PYTHON_TAGS:
            blocks.append(body.rstrip("\r\n"))
        at = end + 3
    if not blocks:
        return None
    return "\n\n".join(blocks)


def _identifier(name, taken):
    """A Python identifier for a tool or parameter name, unique in ``taken``."""
    ident = re.sub(r"[^0-9A-Za-z_]", "_", name) or "_"
    if ident[0].isdigit():
        ident = "_" + ident
    if keyword.iskeyword(ident) or ident in RESERVED:
        ident += "_" if ident not in RESERVED else "_tool"
    base, n = ident, 2
    while ident in taken:
        ident, n = f"{base}_{n}", n + 1
    taken.add(ident)
    return ident


_TYPES = {
    "string": "str",
    "integer": "int",
    "number": "float",
    "boolean": "bool",
    "array": "list",
    "object": "dict",
    "null": "None",
}


def _type_name(schema):
    kind = schema.get("type") if isinstance(schema, dict) else None
    if isinstance(kind, str):
        return _TYPES.get(kind, "Any")
    if isinstance(kind, list):
        names = [_TYPES.get(k, "Any") for k in kind if isinstance(k, str)]
        return " | ".join(names) if names else "Any"
    return "Any"


def _one_line(text, limit=MAX_DESCRIPTION):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_result(text):
    """A tool's result as Python: parsed when it is JSON, else the text."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


class ToolFunction:
    """One granted tool as a Python function: keyword arguments named after
    its schema's properties, the required ones checked before the call;
    calling it calls the host (the gate decides), a refusal or failure
    raises a :class:`ToolError`, a JSON result comes back parsed."""

    def __init__(self, spec, call, name):
        self.tool = spec.name
        self.__name__ = self.__qualname__ = name
        try:
            schema = json.loads(spec.parameters_schema)
        except (ValueError, RecursionError):
            schema = {}
        schema = schema if isinstance(schema, dict) else {}
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = schema.get("required")
        required = required if isinstance(required, list) else []
        self.required = [r for r in required if isinstance(r, str)]
        self.open = schema.get("additionalProperties", True) is not False
        self._call = call
        # Python name -> JSON name, and what the prompt shows of each.
        self.parameters = {}
        taken = set()
        shown = []
        ordered = [p for p in self.required if p in properties] + [
            p for p in properties if p not in self.required
        ]
        for json_name in ordered:
            py_name = _identifier(json_name, taken)
            self.parameters[py_name] = json_name
            prop = properties.get(json_name)
            prop = prop if isinstance(prop, dict) else {}
            is_required = json_name in self.required
            parameter = inspect.Parameter(
                py_name,
                inspect.Parameter.KEYWORD_ONLY,
                default=inspect.Parameter.empty if is_required else None,
                annotation=_type_name(prop),
            )
            note = [_type_name(prop), "required" if is_required else "optional"]
            if "default" in prop:
                note.append(f"default {json.dumps(prop['default'])[:80]}")
            if isinstance(prop.get("enum"), list):
                note.append("one of " + ", ".join(json.dumps(v)[:40] for v in prop["enum"][:20]))
            line = f"{py_name} ({', '.join(note)})"
            if json_name != py_name:
                line += f" [JSON name {json.dumps(json_name)}]"
            if prop.get("description"):
                line += ": " + _one_line(prop["description"])
            shown.append((parameter, line))
        params = [p for p, _ in shown]
        if self.open:
            params.append(inspect.Parameter("more", inspect.Parameter.VAR_KEYWORD))
        self.__signature__ = inspect.Signature(params, return_annotation="Any")
        doc = _one_line(spec.description or f"The tool `{spec.name}`.")
        if shown:
            doc += "\n\nArguments (keyword only):\n" + "\n".join(f"  {line}" for _, line in shown)
        self.__doc__ = doc

    def signature(self):
        """``name(*, a: str, b: int = None) -> Any``, as the prompt shows it."""
        shown = []
        for p in self.__signature__.parameters.values():
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                shown.append(f"**{p.name}")
            elif p.default is inspect.Parameter.empty:
                shown.append(f"{p.name}: {p.annotation}")
            else:
                shown.append(f"{p.name}: {p.annotation} = None")
        return f"{self.__name__}({', '.join(['*'] + shown) if shown else ''}) -> Any"

    def __repr__(self):
        return f"<tool {self.tool}: {self.signature()}>"

    def __call__(self, *args, **kwargs):
        name = self.__name__
        usage = f"{name}({', '.join(p + '=...' for p in self.parameters)})"
        if args:
            raise TypeError(f"{name}() takes keyword arguments only: {usage}")
        arguments = {}
        by_json = {j: j for j in self.parameters.values()}
        for key, value in kwargs.items():
            json_name = self.parameters.get(key) or by_json.get(key)
            if json_name is None:
                if not self.open:
                    raise TypeError(f"{name}() got an unexpected argument {key!r}: {usage}")
                json_name = key
            if value is None and json_name not in self.required:
                continue
            arguments[json_name] = value
        missing = [r for r in self.required if r not in arguments]
        if missing:
            raise TypeError(f"{name}() is missing required argument(s) {', '.join(missing)}: {usage}")
        try:
            text = json.dumps(arguments, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as e:
            raise TypeError(f"{name}(): the arguments cannot be sent as JSON: {e}") from None
        try:
            result = self._call(self.tool, text)
        except Exception as e:  # the host's refusal, with its kind
            kind = getattr(e, "kind", None)
            if kind is None:
                raise
            reason = getattr(e, "reason", str(e))
            raise _KIND_CLASS.get(kind, ToolError)(self.tool, kind, reason) from None
        return parse_result(result)


class BoundedText(io.TextIOBase):
    """A text stream that keeps its first ``limit`` characters and counts
    the rest without keeping them."""

    def __init__(self, limit):
        super().__init__()
        self.limit = limit
        self._parts = []
        self.kept = 0
        self.dropped = 0

    def writable(self):
        return True

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        room = self.limit - self.kept
        if room > 0:
            part = text[:room]
            self._parts.append(part)
            self.kept += len(part)
        self.dropped += max(0, len(text) - max(room, 0))
        return len(text)

    def getvalue(self):
        return "".join(self._parts)


_REPR = reprlib.Repr()
_REPR.maxstring = MAX_VALUE
_REPR.maxother = MAX_VALUE
_REPR.maxlong = MAX_VALUE
_REPR.maxlevel = 6
for _attr in ("maxlist", "maxtuple", "maxdict", "maxset", "maxfrozenset", "maxdeque", "maxarray"):
    setattr(_REPR, _attr, 100)


def _cut(text, limit):
    if len(text) <= limit:
        return text, 0
    return text[:limit], len(text) - limit


def _describe_exception(exc, filename):
    """``TypeName: message (line N)``: where in the model's code it was
    raised, never a frame of the agent's own."""
    line = getattr(exc, "lineno", None) if isinstance(exc, SyntaxError) else None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    try:
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    except Exception:  # noqa: BLE001 - a hostile __str__
        text = type(exc).__name__
    if line is not None and not isinstance(exc, SyntaxError):
        text += f" (line {line})"
    return _cut(text, MAX_ERROR)[0]


class Outcome:
    """What running one code block gave."""

    def __init__(self):
        self.stdout = ""
        self.stdout_dropped = 0
        self.value = None
        self.value_dropped = 0
        self.error = None
        self.final = None
        self.finished = False

    def observation(self, step):
        """The text the model reads next."""
        parts = [f"Observation (step {step}):"]
        if self.stdout:
            parts.append("printed:\n" + self.stdout.rstrip("\n"))
        if self.stdout_dropped:
            parts.append(
                f"[printed output cut at {MAX_STDOUT} characters: "
                f"{self.stdout_dropped} more not shown; print less]"
            )
        if self.value is not None:
            parts.append("value: " + self.value)
            if self.value_dropped:
                parts.append(f"[value cut: {self.value_dropped} more characters not shown]")
        if self.error is not None:
            parts.append("error: " + self.error)
        if len(parts) == 1:
            parts.append("(no output, no value)")
        return "\n".join(parts)


def answer_text(value):
    """A final answer value as the run's answer text."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        try:
            return str(value)
        except Exception:  # noqa: BLE001 - a hostile __str__
            return repr(type(value))


class Session:
    """One run's namespace: the tool functions, ``final_answer`` and the
    tool exceptions, and whatever the model's code defines (kept from one
    step to the next, as smolagents and notebooks do)."""

    def __init__(self, specs, call):
        taken = set(RESERVED)
        self.functions = []
        for spec in specs:
            self.functions.append(ToolFunction(spec, call, _identifier(spec.name, taken)))
        self._final = None
        self.namespace = {}
        self.reset()

    def reset(self):
        """A fresh namespace (the start of a run)."""

        def final_answer(answer):
            """End the run with ``answer`` as the final answer."""
            self._final = (answer,)
            raise _FinalAnswer()

        self.namespace.clear()
        self.namespace.update(
            {
                "__name__": "__main__",
                "__builtins__": builtins,
                "final_answer": final_answer,
                "tools": {f.__name__: f for f in self.functions},
                "ToolError": ToolError,
                "ToolDenied": ToolDenied,
                "ToolBudgetExhausted": ToolBudgetExhausted,
                "ToolInvalid": ToolInvalid,
                "ToolFailed": ToolFailed,
            }
        )
        for function in self.functions:
            self.namespace[function.__name__] = function

    def tool_listing(self):
        """Each tool as the prompt shows it: signature and docstring."""
        out = []
        for f in self.functions:
            doc = "\n    ".join(f.__doc__.splitlines())
            out.append(f'def {f.signature()}:\n    """{doc}"""')
        return "\n\n".join(out)

    def execute(self, code, step):
        """Run ``code``; never raises (but for what stops the instance)."""
        outcome = Outcome()
        filename = f"<step {step}>"
        printed = BoundedText(MAX_STDOUT)
        self._final = None
        try:
            if len(code) > MAX_CODE:
                raise ValueError(f"the code is {len(code)} characters; at most {MAX_CODE} run")
            tree = ast.parse(code, filename, "exec")
            last = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                last = ast.Expression(tree.body.pop().value)
            with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
                exec(compile(tree, filename, "exec"), self.namespace)
                if last is not None:
                    result = eval(compile(last, filename, "eval"), self.namespace)
                    if result is not None:
                        try:
                            shown = _REPR.repr(result)
                        except Exception as e:  # noqa: BLE001 - a hostile __repr__
                            shown = f"<{type(result).__name__}: repr failed: {type(e).__name__}>"
                        outcome.value, outcome.value_dropped = _cut(shown, MAX_VALUE)
        except _FinalAnswer:
            pass
        except BaseException as caught:  # noqa: BLE001 - SystemExit, KeyboardInterrupt too
            outcome.error = _describe_exception(caught, filename)
        if self._final is not None:
            outcome.finished = True
            outcome.final = self._final[0]
        outcome.stdout = printed.getvalue()
        outcome.stdout_dropped = printed.dropped
        return outcome
