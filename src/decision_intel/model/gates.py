"""The gates operators meet, as data: meaning, diagnosis, action (`gates.toml`).

`p35 why` looks a gate up here for its "what to do". docs/action-mapping.md's
tables are rendered from the same data: `python -m decision_intel.model.gates FILE`
rewrites the generated blocks of FILE in place, and a test checks the doc agrees.
Pure apart from reading the package's own data file.
"""

from __future__ import annotations

import functools
import re
import sys
import tomllib
from dataclasses import dataclass
from importlib import resources

DOC = "docs/action-mapping.md"
_BLOCK = re.compile(
    r"(<!-- gates: (?P<decision>[A-Z]+) "
    r"\(generated from src/decision_intel/model/gates.toml\) -->\n)"
    r".*?(<!-- end of gates -->)",
    re.S,
)
_HEADER = "| gate | meaning | diagnose | action |\n|---|---|---|---|\n"


@dataclass(frozen=True)
class Gate:
    names: tuple[str, ...]
    decision: str
    meaning: str
    diagnose: str
    action: str
    todo: str
    label: str | None = None

    @property
    def anchor(self) -> str:
        """Where docs/action-mapping.md explains it (each row carries this anchor)."""
        return self.names[0].replace("*", "")

    @property
    def link(self) -> str:
        return f"{DOC}#{self.anchor}"


@functools.cache
def catalog() -> tuple[Gate, ...]:
    raw = tomllib.loads((resources.files("decision_intel.model") / "gates.toml").read_text())
    return tuple(
        Gate(
            names=tuple(g["names"]),
            decision=g["decision"],
            meaning=g["meaning"],
            diagnose=g["diagnose"],
            action=g["action"],
            todo=g["todo"],
            label=g.get("label"),
        )
        for g in raw["gate"]
    )


def lookup(reason: str) -> Gate | None:
    """The entry for a normalized reason: by name, else by a `prefix_*` row."""
    for gate in catalog():
        if reason in gate.names:
            return gate
    for gate in catalog():
        for name in gate.names:
            if name.endswith("*") and reason.startswith(name[:-1]):
                return gate
    return None


def table(decision: str) -> str:
    """The markdown table of one decision's gates, as docs/action-mapping.md shows it."""
    rows = []
    for g in catalog():
        if g.decision != decision:
            continue
        label = g.label or ", ".join(f"`{n}`" for n in g.names)
        cell = f'<a id="{g.anchor}"></a>{label}'
        rows.append(f"| {cell} | {g.meaning} | {g.diagnose} | {g.action} |\n")
    return _HEADER + "".join(rows)


def rewrite(doc: str) -> str:
    """`doc` with each generated block rendered afresh from the data."""
    return _BLOCK.sub(lambda m: m.group(1) + table(m.group("decision")) + m.group(3), doc)


if __name__ == "__main__":  # python -m decision_intel.model.gates docs/action-mapping.md
    for path in sys.argv[1:]:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        with open(path, "w", encoding="utf-8") as f:
            f.write(rewrite(text))
