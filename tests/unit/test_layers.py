"""The engine's layering (docs/architecture.md): no import cycle among the collection's module_utils, no
function-level import of the collection's own code, and dependencies that point down the layers only.

Read from the source with ``ast`` (what ansible-core's module packer reads too), so a cycle hidden in a
function body counts.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE_UTILS = ROOT / "plugins" / "module_utils"
PACKAGE = "ansible_collections.nodekeep.backup.plugins.module_utils"

#: who may import whom: a module in a layer imports only from its own layer and the layers listed
LAYERS = {
    "core": set(),
    "keys": {"core"},
    "storage": {"core"},
    "retention": {"core"},
    "snapshot": {"core", "retention"},
    "assets": {"core", "keys", "storage", "retention", "snapshot"},
    "ops": {"core", "keys", "storage", "snapshot", "assets", "retention"},
    "common": {"core"},
}

#: the only engine files that may name concrete backends / asset types
OPENERS = {"storage.opener": {"storage.s3_repository"}, "assets.registry": None}


def engine_files() -> dict[str, Path]:
    return {
        ".".join(path.relative_to(MODULE_UTILS).with_suffix("").parts): path
        for path in sorted(MODULE_UTILS.rglob("*.py"))
    }


def own_imports(tree: ast.AST) -> list[tuple[ast.ImportFrom | ast.Import, str]]:
    """Every import of the collection's module_utils in ``tree``, with the imported module's dotted name."""
    found = []
    modules = engine_files()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PACKAGE):
            base = node.module[len(PACKAGE) + 1 :]
            for alias in node.names:
                candidate = "%s.%s" % (base, alias.name) if base else alias.name
                found.append((node, candidate if candidate in modules else base))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PACKAGE + "."):
                    found.append((node, alias.name[len(PACKAGE) + 1 :]))
    return found


def graph() -> dict[str, set[str]]:
    edges = {}
    for name, path in engine_files().items():
        tree = ast.parse(path.read_text(), str(path))
        edges[name] = {target for _node, target in own_imports(tree) if target != name}
    return edges


def layer(name: str) -> str:
    return name.split(".")[0]


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_every_import_names_an_existing_engine_file():
    modules = engine_files()
    for name, targets in graph().items():
        for target in targets:
            assert target in modules, "%s imports %s, which does not exist" % (name, target)


def test_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: %s" % " -> ".join(cycle)


def test_find_cycle_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("top", ["plugins/module_utils", "plugins/modules"])
def test_no_function_level_import_of_own_code(top):
    """Only top-level imports of the collection's code: a function-level one hides a cycle (and still ships)."""
    offenders = []
    for path in sorted((ROOT / top).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        top_level = {id(node) for node in tree.body}
        for node, target in own_imports(tree):
            if id(node) not in top_level:
                offenders.append("%s:%d imports %s" % (path.relative_to(ROOT), node.lineno, target))
    assert not offenders, "function-level imports of the collection's own code:\n" + "\n".join(offenders)


def test_dependencies_point_down_the_layers():
    wrong = []
    for name, targets in graph().items():
        allowed = LAYERS[layer(name)] | {layer(name)}
        for target in targets:
            if layer(target) not in allowed:
                wrong.append("%s imports %s" % (name, target))
    assert not wrong, "imports against the layering (docs/architecture.md):\n" + "\n".join(wrong)


def test_only_the_opener_and_the_registry_name_concrete_backends():
    """Nothing below ops names the S3 backend except the opener; only the registry imports every asset type."""
    wrong = []
    asset_types = {
        name for name in engine_files() if layer(name) == "assets" and not name.split(".")[1].startswith("_")
    }
    asset_types -= {"assets.base", "assets.registry"}
    for name, targets in graph().items():
        if layer(name) in ("core", "keys", "snapshot", "retention") and any(
            t.startswith("storage.s3") for t in targets
        ):
            wrong.append("%s names the S3 backend" % name)
        if name != "assets.registry" and len(targets & asset_types) == len(asset_types):
            wrong.append("%s imports every asset type" % name)
    assert not wrong, "\n".join(wrong)


def test_private_files_are_used_only_inside_their_layer():
    """``_name.py`` files are a layer's private helpers (as community.crypto's ``_crypto``)."""
    wrong = []
    for name, targets in graph().items():
        for target in targets:
            if target.split(".")[-1].startswith("_") and layer(target) != layer(name):
                wrong.append("%s imports the private %s" % (name, target))
    assert not wrong, "\n".join(wrong)


# --------------------------------------------------------------------------
# tests mirror the tree
# --------------------------------------------------------------------------

TESTS = ROOT / "tests" / "unit"

#: engine files that have no unit test of their own yet (most are exercised by tests/integration: S3
#: against SeaweedFS, snapshots on zfs-fuse/btrfs, the replication service, postgres). This list may
#: only shrink: a file listed here that gains its mirrored test fails the test below until removed.
WITHOUT_UNIT_TEST: set[str] = set()


def mirrored_tests(name: str) -> list[Path]:
    """Where the unit test of engine file ``name`` lives: ``tests/unit/LAYER/test_NAME.py``, or
    ``test_LAYER_NAME.py`` when two layers have a file of the same name (pytest's default import mode
    needs one basename per test file); a private ``_name`` is tested as ``test_name.py``."""
    parts = name.split(".")
    folder = TESTS.joinpath(*parts[:-1])
    base = parts[-1].lstrip("_")
    candidates = [folder / ("test_%s.py" % base)]
    if len(parts) > 1:
        candidates.append(folder / ("test_%s_%s.py" % (parts[0], base)))
    return candidates


def test_every_engine_file_has_a_mirrored_unit_test():
    missing, stale = [], []
    for name in engine_files():
        if name.split(".")[-1] == "__init__":
            continue
        has = any(path.exists() for path in mirrored_tests(name))
        if not has and name not in WITHOUT_UNIT_TEST:
            missing.append("%s (expected %s)" % (name, mirrored_tests(name)[0].relative_to(ROOT)))
        if has and name in WITHOUT_UNIT_TEST:
            stale.append(name)
    unknown = sorted(WITHOUT_UNIT_TEST - set(engine_files()))
    assert not missing, "engine files without a mirrored unit test:\n" + "\n".join(missing)
    assert not stale, "these have a unit test now: remove them from WITHOUT_UNIT_TEST: %s" % ", ".join(stale)
    assert not unknown, "WITHOUT_UNIT_TEST names files that do not exist: %s" % ", ".join(unknown)


#: test files of one aspect of an engine file whose name does not start with the file's own
TEST_OF: dict[str, str] = {}


def test_every_unit_test_file_mirrors_an_engine_file():
    """A test file in a layer folder is named after the engine file it tests, ``test_NAME.py`` or
    ``test_NAME_ASPECT.py`` (no test_retention.py testing ops/prune)."""
    expected = {path for name in engine_files() for path in mirrored_tests(name)}

    def mirrors(path: Path) -> bool:
        return any(
            path == test or (path.parent == test.parent and path.name.startswith(test.stem + "_")) for test in expected
        )

    extra = [
        str(path.relative_to(ROOT))
        for path in sorted(TESTS.rglob("test_*.py"))
        if path.parent != TESTS and not mirrors(path) and str(path.relative_to(TESTS)) not in TEST_OF
    ]
    assert all(name in engine_files() for name in TEST_OF.values())
    assert not extra, "unit tests that mirror no engine file (name them after the file they test):\n" + "\n".join(extra)


# --------------------------------------------------------------------------
# one subprocess gateway
# --------------------------------------------------------------------------

#: the one file that may import subprocess (run_command, Process)
GATEWAY = "plugins/module_utils/core/process.py"


def subprocess_imports(path: Path) -> list[int]:
    """Lines of ``path`` that import subprocess (``import subprocess``, ``from subprocess import ...``)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        if any(name.split(".")[0] == "subprocess" for name in names):
            lines.append(node.lineno)
    return lines


def test_subprocess_is_imported_only_by_the_gateway():
    offenders = [
        "%s:%d" % (path.relative_to(ROOT), line)
        for path in sorted((ROOT / "plugins").rglob("*.py"))
        if str(path.relative_to(ROOT)) != GATEWAY
        for line in subprocess_imports(path)
    ]
    assert not offenders, "subprocess imported outside %s (use run_command or Process):\n%s" % (
        GATEWAY,
        "\n".join(offenders),
    )
    assert subprocess_imports(ROOT / GATEWAY), "the gateway itself must be the one importing subprocess"


def test_subprocess_imports_are_seen(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import os\n\ndef f():\n    from subprocess import run\n    import subprocess as sp\n")
    assert subprocess_imports(sample) == [4, 5]
