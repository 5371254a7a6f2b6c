"""The kit's `provider_checks` fixture from a provider's own pytest suite (examples/kit_provider), run as such.

A separate pytest in the example's folder finds the fixture through the `pytest11` entry point alone. That
`pytest --fixtures` lists it (and `provider_check_options`) is checked once, by tests/test_provider_plugin.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

KIT_PROVIDER = Path(__file__).resolve().parents[1] / "examples" / "kit_provider"


def test_the_kit_providers_own_suite_runs_check_provider(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESSAGESERVICE_", "PYTEST_"))}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "t")],
        cwd=KIT_PROVIDER,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
