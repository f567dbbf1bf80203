"""docs/reliability.md promises a test for every case: each test its table names must exist, and
the table must hold at least the 90 cases it claims to.
`python -m pytest tests/reliability/test_reliability_table.py`"""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REF = re.compile(r"`((?:R/|tests/)[\w/]+\.py)?::([\w…]+)")


def _cited_tests() -> list[tuple[int, str, str]]:
    """(line, test file, test function) for every test the table rows name; `::name` after a
    file on the same row names another test of that file."""
    cited = []
    for n, line in enumerate((REPO / "docs/reliability.md").read_text().splitlines(), 1):
        if not line.startswith("| "):
            continue
        last = None
        for path, name in REF.findall(line):
            last = path or last
            if last and "…" not in name:
                cited.append((n, last.replace("R/", "tests/reliability/", 1), name))
    return cited


def test_every_test_the_reliability_table_names_exists():
    cited = _cited_tests()
    missing = [f"docs/reliability.md:{n}: {f}::{name}" for n, f, name in cited
               if not (REPO / f).exists() or f"def {name}(" not in (REPO / f).read_text()]
    assert cited and not missing, "\n".join(missing)


def test_the_table_holds_at_least_ninety_cases_each_with_a_test():
    rows = [[c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]  # \| is a pipe in a cell
            for line in (REPO / "docs/reliability.md").read_text().splitlines()
            if line.startswith("| ") and "|---" not in line]
    cases = [r for r in rows if r[-1] != "Test"]  # the tables' header rows end in "Test"
    untested = [r for r in cases if "::" not in r[-1] and not r[-1].startswith("same test")]
    assert len(cases) >= 90 and not untested, untested
