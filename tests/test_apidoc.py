"""The committed API document is the one the registry generates."""

from __future__ import annotations

from pathlib import Path

from messageservice.methods import build_registry
from messageservice.methods.apidoc import render


def test_docs_api_md_is_current() -> None:
    committed = (Path(__file__).parent.parent / "docs" / "api.md").read_text()
    assert committed == render(build_registry()), "run: messageservice api-doc > docs/api.md"
