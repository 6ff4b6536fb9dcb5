"""Write warden agents and tools in Python (componentize-py guests).

A warden guest is a Wasm component with no ambient authority: it can talk to
the model, call the tools the policy grants and write log lines, and the host
decides every one of those calls against the policy. This package wraps the
``warden:sandbox`` WIT contract (``guest-sdk/wit/sandbox.wit``) in a small
API, in four modules:

- :mod:`warden_sdk.tool` -- declare tools with ``@tool(...)`` and export
  them as the ``tool`` world's ``describe`` / ``invoke``.
- :mod:`warden_sdk.agent` -- the ``agent`` world's imports (model, tools)
  with Python exceptions instead of ``componentize_py_types.Err``.
- :mod:`warden_sdk.log` -- log lines for the run's audit log (both worlds).
- :mod:`warden_sdk.http` -- outgoing HTTP through ``wasi:http``, for tools
  built for the ``tool-http`` world; the host decides each request against
  the tool's ``http`` grant.

The componentize-py bindings (``wit_world``) are imported when the package
is, each one optional (see ``_wit.py``), so the same package serves both
worlds and :mod:`warden_sdk.tool` can be unit-tested on plain CPython.
Everything a guest needs at run time must be imported at build time, at
the top of a module: componentize-py keeps no ``.py`` files in the component.
"""

__all__ = ["agent", "http", "log", "tool"]
