"""assets/_tree.py: a directory asset is one tar stream in and the same tree out (content and metadata), built
in a hidden directory and renamed into place only when complete; its deep check counts entries against the
manifest; an existing target is refused unless forced (then kept aside); a failed restore leaves nothing."""

from __future__ import annotations

import os
import shutil

import pytest
from tree_helpers import make_tree, snapshot

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import _tree
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import RestoreError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import Artifact

pytestmark = pytest.mark.timeout(60)
TREE = _tree.TreeAssetType()


def capture(root) -> tuple[bytes, dict]:
    asset = TREE.normalize({"name": "conf", "path": str(root)})
    with TREE.capture(asset, "/nonexistent-scratch") as captured:
        data = captured.stream.read()
        return data, {**captured.facts, **captured.finish()}


def restore(data: bytes, target, force: bool = False) -> dict:
    with TREE.restore_into(str(target), force) as staged:
        assert not os.path.exists(target) or force
        staged.stream.write(data)
        return staged.complete()


def artifact(facts: dict) -> Artifact:
    return Artifact("conf", "tree", "conf.tar.zst.age", "tar+zstd+age", 0, "0", 0, "0", source=facts)


def test_a_tree_comes_back_as_it_was(tmp_path):
    src = make_tree(tmp_path / "src")
    data, facts = capture(src)
    # a FIFO is archived (other), sockets and devices are not
    assert facts["entries"]["files"] == 3 and facts["entries"]["hardlinks"] == 1 and facts["entries"]["other"] == 1
    target = tmp_path / "restore" / "etc" / "app"
    done = restore(data, target)
    assert done["entries"]["files"] == 3
    assert snapshot(target) == snapshot(src)
    assert os.listdir(target.parent) == ["app"]  # no hidden temporary left
    assert TREE.deep_check(str(target), artifact(facts)) == {"entries": _tree.tree_counts(str(target))}


def test_the_deep_check_refuses_a_tree_that_does_not_match_its_manifest(tmp_path):
    src = make_tree(tmp_path / "src")
    data, facts = capture(src)
    target = tmp_path / "restored"
    restore(data, target)
    os.unlink(target / "secret")
    with pytest.raises(RestoreError, match="has 2 files, the manifest says 3"):
        TREE.deep_check(str(target), artifact(facts))


def test_an_existing_target_is_refused_then_kept_aside_when_forced(tmp_path):
    src = make_tree(tmp_path / "src")
    data, _facts = capture(src)
    target = tmp_path / "app"
    target.mkdir()
    (target / "live.conf").write_text("live")
    with pytest.raises(RestoreError, match="the restore target %s already exists" % target):
        restore(data, target)
    restore(data, target, force=True)
    assert snapshot(target) == snapshot(src)
    (kept,) = [path for path in tmp_path.iterdir() if path.name.startswith("app.nodekeep-replaced-")]
    assert (kept / "live.conf").read_text() == "live"


def test_a_damaged_stream_leaves_nothing(tmp_path):
    src = make_tree(tmp_path / "src")
    data, _facts = capture(src)
    target = tmp_path / "out" / "app"
    with pytest.raises(RestoreError, match="damaged or truncated"):
        restore(data[: len(data) // 2], target)
    assert os.listdir(tmp_path / "out") == []


def test_include_and_exclude(tmp_path):
    src = make_tree(tmp_path / "src")
    asset = TREE.normalize({"name": "conf", "path": str(src), "exclude": ["sub"]})
    with TREE.capture(asset, str(tmp_path)) as captured:
        data = captured.stream.read()
        facts = captured.finish()
    restore(data, tmp_path / "out")
    assert not (tmp_path / "out" / "sub").exists() and (tmp_path / "out" / "a.txt").read_text() == "hello\n"
    assert facts["entries"]["excluded"] == 1
    shutil.rmtree(tmp_path / "out")
