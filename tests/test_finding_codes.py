"""Every finding code is produced in exactly one place, and documented.

Codes are the machine-readable half of a finding: pipelines count them.  A
code made in two modules drifts apart in meaning; this test lists, from the
source, which module makes each code and fails when one is made in two.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "kho_drgn"
README = PACKAGE.parent / "README.md"
FACTORIES = {"error", "warning", "info"}
CODE_RE = re.compile(r"[a-z0-9]+(\.[a-z0-9-]+)+")


def _constants(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "string"`` assignments."""
    found = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            found[node.targets[0].id] = node.value.value
    return found


def codes_by_module() -> dict[str, set[str]]:
    """code -> the modules whose error()/warning()/info() calls make it."""
    trees = {
        str(path.relative_to(PACKAGE)): ast.parse(path.read_text())
        for path in sorted(PACKAGE.rglob("*.py"))
    }
    constants: dict[str, str] = {}
    for tree in trees.values():
        constants.update(_constants(tree))
    made: dict[str, set[str]] = defaultdict(set)
    for module, tree in trees.items():
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in FACTORIES
                and node.args
            ):
                continue
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                made[arg.value].add(module)
            elif isinstance(arg, ast.Name) and arg.id in constants:
                made[constants[arg.id]].add(module)
            else:
                made[f"<computed at {module}:{node.lineno}>"].add(module)
    return made


def test_every_code_is_made_in_exactly_one_module() -> None:
    made = codes_by_module()
    assert len(made) > 50  # the scan sees the package's findings
    computed = sorted(code for code in made if code.startswith("<"))
    assert computed == [], "finding codes must be literals or module constants"
    twice = {code: sorted(m) for code, m in made.items() if len(m) > 1}
    assert twice == {}, f"codes made in more than one module: {twice}"


def test_every_code_is_well_formed_and_its_family_documented() -> None:
    readme = README.read_text()
    for code in codes_by_module():
        assert CODE_RE.fullmatch(code), code
        family = code.split(".", 1)[0]
        assert f"`{family}.*`" in readme or f"`{code}`" in readme, code


#: Codes whose one module is fixed: every reader of target physical pages goes
#: through ``kho_drgn.pages``, so pointer, cycle and budget findings are the
#: same codes whatever structure was walked.
MADE_IN = {
    "page.bad-pointer": "pages.py",
    "page.cycle": "pages.py",
    "page.too-many": "pages.py",
    "memory.missing": "findings.py",
}
#: Codes of report schema 1 that the page reader replaced (README, "Schema
#: versions"): no module makes them any more.
RETIRED = {
    "memmap.pointer-unaligned": "page.bad-pointer",
    "memmap.pointer-out-of-range": "page.bad-pointer",
    "memmap.cycle": "page.cycle",
    "memmap.too-many-nodes": "page.too-many",
    "subtree.bad-pointer": "page.bad-pointer",
    "subtree.cycle": "page.cycle",
    "luo.bad-pointer": "page.bad-pointer",
    "luo.cycle": "page.cycle",
}


def test_page_codes_come_from_the_page_reader() -> None:
    made = codes_by_module()
    assert {code: sorted(made.get(code, ())) for code in MADE_IN} == {
        code: [module] for code, module in MADE_IN.items()
    }
    assert sorted(set(RETIRED) & set(made)) == []


def test_retired_codes_are_in_the_schema_table() -> None:
    """README's "Schema versions" maps every retired code to its successor."""
    readme = README.read_text()
    section = readme[readme.index("## Schema versions") :]
    for old, new in RETIRED.items():
        assert f"| `{old}` | `{new}` |" in section, old
