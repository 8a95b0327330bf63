"""Every module's DOCUMENTATION, EXAMPLES and RETURN and every doc fragment is valid YAML.

ansible-doc and ansible-test's validate-modules fail on one stray ``: `` in a description;
this finds it in a second, naming the file and the string, before the slow sanity run.
"""

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOC_NAMES = {"DOCUMENTATION", "EXAMPLES", "RETURN"}


def _doc_strings(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assign) or not isinstance(node.value, ast.Constant):
            continue
        if not isinstance(node.value.value, str):
            continue
        for target in node.targets:
            if isinstance(target, ast.Name) and (target.id in DOC_NAMES or "doc_fragments" in path.parts):
                yield target.id, node.value.value


FILES = sorted((ROOT / "plugins" / "modules").glob("*.py")) + sorted((ROOT / "plugins" / "doc_fragments").glob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda path: "%s/%s" % (path.parent.name, path.name))
def test_doc_strings_are_valid_yaml(path):
    found = 0
    for name, text in _doc_strings(path):
        found += 1
        try:
            yaml.safe_load(text)
        except yaml.YAMLError as exc:
            pytest.fail("%s %s is not valid YAML: %s" % (path.name, name, exc))
    if path.parent.name == "modules" and not path.name.startswith("_"):
        assert found >= 3, "%s lacks DOCUMENTATION, EXAMPLES or RETURN" % path.name


def _texts_not_strings(node, where=""):
    """Every ``description``/``details`` that is not a string or a list of strings (a stray ``: `` in a list item
    makes YAML read it as a mapping, which ansible-doc and validate-modules refuse), with where it is."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = "%s.%s" % (where, key) if where else str(key)
            if key in ("description", "details"):
                items = value if isinstance(value, list) else [value]
                for index, item in enumerate(items):
                    if not isinstance(item, str):
                        yield "%s[%d]: %r" % (here, index, item)
            else:
                yield from _texts_not_strings(value, here)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _texts_not_strings(item, "%s[%d]" % (where, index))


@pytest.mark.parametrize("path", FILES, ids=lambda path: "%s/%s" % (path.parent.name, path.name))
def test_descriptions_are_strings(path):
    bad = []
    for name, text in _doc_strings(path):
        if name != "EXAMPLES":
            bad += ["%s %s" % (name, found) for found in _texts_not_strings(yaml.safe_load(text))]
    assert not bad, "%s: a description item is not a string (a ': ' inside it?): %s" % (path.name, bad)
