"""The componentize-py bindings, imported once, when ``warden_sdk`` is.

componentize-py runs the app's imports at build time and snapshots the
interpreter; the component carries no ``.py`` files, so a module imported
for the first time inside a function at run time fails with ``ImportError``
(componentize-py issue #23). The bindings are therefore imported here,
eagerly, each one optional: the ``tool`` world has no ``model`` or
``tools``, only ``tool-http`` has ``wasi:http``, and plain CPython (unit
tests) has no bindings at all. Where two imported interfaces share a name
(``warden:sandbox/types`` and ``wasi:http/types`` in ``tool-http``),
componentize-py prefixes each with its package; both spellings are tried.
"""

import importlib


def _optional(name):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


_types_module = _optional("componentize_py_types")
Err = getattr(_types_module, "Err", None)
types = _optional("wit_world.imports.types") or _optional(
    "wit_world.imports.warden_sandbox_types"
)
log = _optional("wit_world.imports.log")
model = _optional("wit_world.imports.model")
tools = _optional("wit_world.imports.tools")
limits = _optional("wit_world.imports.limits")
http_types = _optional("wit_world.imports.wasi_http_types")
outgoing_handler = _optional("wit_world.imports.outgoing_handler")
streams = _optional("wit_world.imports.streams")


def need(module, what: str):
    """Return ``module``, or fail clearly when this world does not have it."""
    if module is None:
        raise RuntimeError(
            f"{what} is not in this component's bindings: build it with "
            "componentize-py for the right world (-w agent, -w tool or -w tool-http)"
        )
    return module
