"""The layering the architecture promises, read from the code itself (every import statement,
top level or inside a function): the domain packages (assets/, models/) never import Dagster or
the adapters in pipelines/; the adapters import no private name of another package; the command
modules do not import each other (each calls the domain API, not a sibling).
`python -m pytest tests/test_layering.py -q`"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _imports(path: Path):
    """(module, names) of every import in a file; names is () for `import x`."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, ()
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, tuple(a.name for a in node.names)


def _files(*packages: str):
    return sorted(p for pkg in packages for p in (REPO / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", _files("assets", "models"), ids=lambda p: str(p.relative_to(REPO)))
def test_domain_code_imports_neither_dagster_nor_the_adapters(path):
    bad = [m for m, _ in _imports(path) if m.split(".")[0] in ("dagster", "pipelines")]
    assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def test_adapters_use_public_names_and_commands_no_sibling():
    problems = []
    for path in _files("pipelines"):
        rel = path.relative_to(REPO)
        for module, names in _imports(path):
            root = module.split(".")[0]
            if root in ("assets", "models", "pipelines"):
                problems += [f"{rel}: private {module}.{n}" for n in names if n.startswith("_")]
            if rel.parts[:2] == ("pipelines", "commands") and module.startswith("pipelines.commands.") \
                    and module != "pipelines.commands.common":
                problems.append(f"{rel}: imports the command module {module}")
    assert not problems, problems
