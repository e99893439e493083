"""The README stays true to the code."""

from __future__ import annotations

from pathlib import Path

from decision_intel.settings import Settings, _env_name

ROOT = Path(__file__).resolve().parent.parent


def test_readme_starts_with_the_two_commands() -> None:
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:25])
    assert "make demo" in head and "make test" in head


def test_readme_configuration_table_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [
        _env_name(name)
        for name in Settings.model_fields
        if not name.startswith("legacy_") and f"`{_env_name(name)}`" not in readme
    ]
    assert not missing, f"settings missing from the README table: {missing}"
