"""The package's folders are its layers (docs/design.md), and import-linter holds them:
these tests fail when a contract breaks, when one is weakened by an `ignore_imports`
line, or when a command module is left out of the commands' independence."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _contracts() -> list[dict[str, Any]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return list(config["tool"]["importlinter"]["contracts"])


def test_every_import_contract_is_kept() -> None:
    """lint-imports over the installed package: every contract kept, none broken."""
    out = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"Contracts: {len(_contracts())} kept, 0 broken." in out.stdout


def test_no_contract_carries_an_exception() -> None:
    """A leak is fixed by moving the shared piece down, never by an ignore_imports line."""
    weakened = [c["name"] for c in _contracts() if c.get("ignore_imports")]
    assert not weakened, weakened


def test_every_command_module_is_independent_of_the_others() -> None:
    """A new module in cli/ is a command: it joins the independence contract."""
    commands = {
        f"decision_intel.cli.{p.stem}"
        for p in (ROOT / "src/decision_intel/cli").glob("*.py")
        if p.stem not in ("__init__", "main")
    }
    independent = [set(c["modules"]) for c in _contracts() if c["type"] == "independence"]
    assert commands in independent
