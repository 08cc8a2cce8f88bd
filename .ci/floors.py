"""Pip constraints pinning every dependency edgekd declares to its floor (``pkg>=X`` -> ``pkg==X``), for
``make test-floor``: the lowest versions the package says it works with, installed and smoke-tested, so
a floor that is too low fails a job instead of a user's install.

Usage: python .ci/floors.py pyproject.toml EXTRA [EXTRA ...] > constraints.txt
"""

from __future__ import annotations

import re
import sys
import tomllib

FLOOR = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(?:\[[^\]]*\])?\s*>=\s*([0-9][^,;\s]*)")
# torch's companions are pinned to the release built against the torch floor, not their own floor
COMPANIONS = {"torch": {"2.10": {"torchvision": "0.25.0"}}}


def floors(pyproject: str, extras: list[str]) -> dict[str, str]:
    with open(pyproject, "rb") as f:
        project = tomllib.load(f)["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    found: dict[str, str] = {}
    for requirement in requirements:
        m = FLOOR.match(requirement)
        if m:
            found[m.group(1).lower()] = m.group(2)
    torch = found.get("torch", "")
    for name, version in COMPANIONS["torch"].get(".".join(torch.split(".")[:2]), {}).items():
        if name in found:
            found[name] = version
    return found


def main() -> None:
    pyproject, *extras = sys.argv[1:]
    for name, version in sorted(floors(pyproject, extras).items()):
        print(f"{name}=={version}")


if __name__ == "__main__":
    main()
