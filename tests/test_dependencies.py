"""Every runtime dependency that pyproject.toml declares is imported by the code it ships, or says why not."""

from __future__ import annotations

import ast
import re
import tomllib
from collections import defaultdict
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("cbi_service", "adapters", "ledger", "migrations")

#: Dependencies used without an import of their own, each with its reason; a stale entry fails the test too.
NOT_IMPORTED = {
    "python-multipart": "FastAPI parses multipart uploads (imports, statements) with it",
}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [
        _canonical(re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]) for requirement in project["dependencies"]
    ]


def _imported_modules() -> set[str]:
    modules: set[str] = set()
    for folder in SHIPPED:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    modules.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    modules.add(node.module.split(".")[0])
    return modules


def test_every_declared_dependency_is_used():
    modules_of: defaultdict[str, set[str]] = defaultdict(set)
    for module, distributions in packages_distributions().items():
        for distribution in distributions:
            modules_of[_canonical(distribution)].add(module)
    imported = _imported_modules()
    declared = _declared()

    missing = [name for name in declared if not modules_of[name]]
    unused = [name for name in declared if name not in NOT_IMPORTED and not modules_of[name] & imported]

    assert missing == [], f"declared in pyproject.toml, not installed: {missing}"
    assert unused == [], f"declared in pyproject.toml, imported nowhere: {unused}"
    for name in NOT_IMPORTED:
        assert name in declared, f"{name} is no longer a dependency"
        assert not modules_of[name] & imported, f"{name} is imported now: drop it from NOT_IMPORTED"
