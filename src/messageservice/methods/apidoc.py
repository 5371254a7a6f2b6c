"""The API document, generated from the method registry so that it cannot drift from the code."""

from __future__ import annotations

from messageservice.rest.registry import GLOBAL_SCOPE, Registry

HEADER = """# REST methods

Generated from the method registry by `messageservice api-doc`; do not edit by hand.
Call any method as `/rest/{method}` (or `.json`, `.xml`, or `/rest/{user_id}/{secret}/{method}`
for a webhook). "basic" methods need no scope. Extensions are ours: Bitrix24 does not have them.

| method | scope | what it does |
|---|---|---|
"""


def render(registry: Registry) -> str:
    rows = []
    for method in sorted(registry.methods.values(), key=lambda m: (m.scope, m.name)):
        scope = method.scope if method.scope != GLOBAL_SCOPE else "basic"
        summary = method.summary + (" (extension)" if method.extension else "")
        rows.append(f"| `{method.name}` | {scope} | {summary} |")
    return HEADER + "\n".join(rows) + "\n"
