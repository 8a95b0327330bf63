"""Messages of the engine name what an operator of the installed collection uses (issue 16): playbooks by
their FQCN (``ansible-playbook nodekeep.backup.backup``), never a checkout path (``playbooks/backup.yml``,
``roles/...``), and a taken restore target names the variable ``nodekeep_restore_force``, not the module
option ``force``. Every string literal of plugins/module_utils is checked (docstrings and comments aside)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "plugins" / "module_utils"
#: the files whose "already exists" refusals are about a restore (the restore role sets nodekeep_restore_force)
RESTORE_FILES = ("assets/base.py", "assets/_tree.py", "assets/postgres.py", "assets/zfs.py", "ops/epoch.py", "ops/pitr.py")


def literals(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


@pytest.mark.parametrize("path", sorted(ENGINE.rglob("*.py")), ids=lambda p: str(p.relative_to(ENGINE)))
def test_no_message_names_a_checkout_path(path):
    bad = [(line, text) for line, text in literals(path) if re.search(r"\b(playbooks|roles)/\w", text)]
    assert not bad, "name the FQCN playbook (ansible-playbook nodekeep.backup.NAME) instead: %r" % bad


@pytest.mark.parametrize("name", RESTORE_FILES)
def test_restore_refusals_name_the_variable_not_the_option(name):
    bad = [(line, text) for line, text in literals(ENGINE / name) if re.search(r"(?<!nodekeep_restore_)\bforce: true", text)]
    assert not bad, "say nodekeep_restore_force: true: %r" % bad
