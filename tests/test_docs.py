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


def test_the_module_map_covers_every_module_and_script() -> None:
    """docs/design.md's module map names every module of the package and every Lua script."""
    design = (ROOT / "docs/design.md").read_text()
    package = ROOT / "src/decision_intel"
    names = [str(p.relative_to(package)) for p in package.rglob("*.py") if p.name != "__init__.py"]
    names += [p.name for p in (package / "store/lua").glob("*.lua")]
    missing = [n for n in names if f"`{n}`" not in design]
    assert not missing, f"missing from the module map in docs/design.md: {missing}"
