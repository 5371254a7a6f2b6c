"""docs/api.md is what the method registry generates, and the registry's declarations match the code.

The declarations (methods/declare.py) describe parameters and errors beside each method; the code in core/
raises the errors. These tests keep the two together: every declared error text is one the code has, and
every literal error text of the messageservice core is declared by some method.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from messageservice.core import messages, statuses
from messageservice.methods import build_registry
from messageservice.methods.apidoc import REGENERATE, common_errors, render
from messageservice.methods.declare import Failure, declaration_of

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "messageservice"
# The modules whose errors the messageservice methods give.
CORE_MODULES = ("core/senders.py", "core/messages.py", "core/queueing.py", "rest/batch.py")


def declared_failures() -> list[Failure]:
    found = []
    for method in build_registry().methods.values():
        declared = declaration_of(method.handler)
        assert declared is not None, f"{method.name} has no @declare(...)"
        found.extend(declared.errors)
    return found


def literal_texts() -> tuple[set[str], list[re.Pattern[str]]]:
    """Every string constant in the package, and every f-string as a pattern."""
    constants: set[str] = set()
    patterns: list[re.Pattern[str]] = []
    for path in SOURCE.rglob("*.py"):
        if "methods" in path.parts:
            continue  # the declarations themselves prove nothing
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                constants.add(node.value)
            elif isinstance(node, ast.JoinedStr):
                parts = [re.escape(v.value) if isinstance(v, ast.Constant) else ".+" for v in node.values]
                patterns.append(re.compile("".join(parts)))
    return constants, patterns


def test_docs_api_md_is_what_the_registry_generates() -> None:
    committed = (ROOT / "docs" / "api.md").read_text()
    assert committed == render(build_registry()), f"docs/api.md is stale; regenerate it: {REGENERATE}"


def test_every_method_declares_its_parameters_answer_and_errors() -> None:
    for method in build_registry().methods.values():
        declared = declaration_of(method.handler)
        assert declared is not None and declared.caller and declared.answer, method.name
        names = [p.name.upper() for p in declared.params]
        assert len(names) == len(set(names)), f"{method.name} declares a parameter twice"


def test_declared_errors_are_ones_the_code_gives() -> None:
    constants, patterns = literal_texts()
    for failure in declared_failures() + common_errors():
        assert failure.code in constants, f"{failure.code} is raised nowhere"
        text = failure.text
        known = text in constants or any(p.fullmatch(text) for p in patterns)
        assert known or text == "", f"{failure.code} {text!r}: no such text in the code"


def test_every_error_text_of_the_core_is_declared() -> None:
    declared = {f.text for f in declared_failures()}
    missing = []
    for name in CORE_MODULES:
        for node in ast.walk(ast.parse((SOURCE / name).read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            if node.func.id not in ("CoreError", "_invalid") or not node.args:
                continue
            if node.func.id == "CoreError" and len(node.args) < 2:
                continue  # CoreError(*NOT_FOUND): the tuple's text is checked below
            text = node.args[-1] if node.func.id == "_invalid" else node.args[1]
            if isinstance(text, ast.Constant) and text.value not in declared:
                missing.append(f"{name}: {text.value}")
            if isinstance(text, ast.JoinedStr):
                parts = [re.escape(v.value) if isinstance(v, ast.Constant) else ".+" for v in text.values]
                pattern = re.compile("".join(parts))
                if not any(pattern.fullmatch(d) for d in declared):
                    missing.append(f"{name}: {ast.unparse(text)}")
    if messages.NOT_FOUND[1] not in declared:
        missing.append(f"core/messages.py: {messages.NOT_FOUND[1]}")
    assert not missing, "errors the code gives but no method declares (add them to its @declare):\n" + "\n".join(
        missing
    )


def test_terse_errors_list_the_valid_values() -> None:
    reference = (ROOT / "docs" / "api.md").read_text()
    rows = [line for line in reference.splitlines() if "`Message status incorrect!`" in line]
    assert rows
    for row in rows:
        for status in statuses.REPORTABLE:
            assert f"`{status}`" in row, row
    (type_row,) = [line for line in reference.splitlines() if "`Unknown sender message TYPE!`" in line]
    assert "`SMS`" in type_row


def test_the_reference_covers_every_method_and_status() -> None:
    reference = render(build_registry())
    for name in build_registry().methods:
        assert f"\n## {name}\n" in reference
    for status in statuses.BY_ID.values():
        assert f"| {status.id} | `{status.name}` |" in reference
