"""Every byte and every attribute comes back (issue 13, "Data fidelity"), on a real ext4 filesystem.

Each class is checked for every tree asset type (``files``, ``config`` directory, ``secret`` directory)
and every restore path (epoch_restore, a deep integrity_check, age_seal opening a sealed directory).
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path

import pytest
from module_driver import run_module, succeeded

TREE_TYPES = ["files", "config", "secret"]


def asset(kind: str, path: Path, tmp_path: Path, name: str = "tree") -> dict:
    item = {"name": name, "type": kind, "path": str(path)}
    if kind == "files":
        item["state_dir"] = str(tmp_path / "files-state")
    return item


def staged(target_root: Path, source: Path) -> Path:
    return target_root / str(source).lstrip("/")


def snapshot(root: Path) -> dict:
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            digest = None
            if stat.S_ISREG(info.st_mode):
                with open(path, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
            found[os.path.relpath(path, root)] = (info.st_mode, info.st_mtime_ns, digest)
    return found


# --------------------------------------------------------------------------
# absolute symlinks are data
# --------------------------------------------------------------------------


@pytest.fixture
def linked_tree(tmp_path):
    """A tree like /etc and /srv/app: absolute links (one to a real directory outside the tree), a relative
    link leaving the tree, a dangling one, and a regular file beside them."""
    outside = tmp_path / "outside"
    (outside / "releases" / "3").mkdir(parents=True)
    (outside / "releases" / "3" / "app.bin").write_bytes(b"release 3")
    root = tmp_path / "srv-app"
    root.mkdir()
    (root / "app.conf").write_text("port = 8080\n")
    os.symlink("/usr/share/zoneinfo/Etc/UTC", root / "localtime")
    os.symlink(str(outside / "releases" / "3"), root / "current")
    os.symlink("../outside/releases", root / "releases")
    os.symlink("/srv/app/releases/9", root / "dangling")
    links = {name: os.readlink(root / name) for name in ("localtime", "current", "releases", "dangling")}
    return root, outside, links


def assert_links_kept(restored: Path, links: dict) -> None:
    for name, target in links.items():
        assert os.path.islink(restored / name), "%s was not restored as a symlink" % name
        assert os.readlink(restored / name) == target
    assert (restored / "app.conf").read_text() == "port = 8080\n"


class TestAbsoluteSymlinks:
    @pytest.mark.parametrize("kind", TREE_TYPES)
    def test_backed_up_and_restored_as_links_never_followed(self, kind, node, linked_tree, tmp_path):
        root, outside, links = linked_tree
        before = snapshot(outside)
        node.backup([asset(kind, root, tmp_path)])
        report = node.verify(deep=True)
        assert report["ok"], report["problems"]
        result = node.restore(tmp_path / "staging")
        restored = staged(tmp_path / "staging", root)
        assert result["artifacts"][0]["path"] == str(restored)
        assert_links_kept(restored, links)
        assert snapshot(outside) == before, "the restore wrote through a link"

    def test_a_link_in_the_archive_is_still_never_written_through(self, tmp_path, age_key):
        """Keeping links does not open a way out: an entry below a link is refused, nothing written outside."""
        import io
        import tarfile

        from ansible_collections.nodekeep.backup.plugins.module_utils import archive
        from ansible_collections.nodekeep.backup.plugins.module_utils.errors import RestoreError

        outside = tmp_path / "outside"
        outside.mkdir()
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            link = tarfile.TarInfo("current")
            link.type = tarfile.SYMTYPE
            link.linkname = str(outside)
            tar.addfile(link)
            payload = tarfile.TarInfo("current/planted")
            payload.size = 1
            tar.addfile(payload, io.BytesIO(b"x"))
        with pytest.raises(RestoreError, match="written through"):
            archive.extract_tar(io.BytesIO(buffer.getvalue()), str(tmp_path / "dest"))
        assert list(outside.iterdir()) == []

    def test_age_seal_opens_a_directory_with_absolute_links(self, linked_tree, tmp_path, age_key):
        root, _outside, links = linked_tree
        sealed = tmp_path / "tree.age"
        succeeded(
            run_module(
                "age_seal",
                {"state": "sealed", "src": str(root), "dest": str(sealed), "recipients": [age_key.recipient]},
            )
        )
        succeeded(
            run_module(
                "age_seal",
                {
                    "state": "opened",
                    "src": str(sealed),
                    "dest": str(tmp_path / "back"),
                    "identity_files": [str(age_key.identity_path)],
                },
            )
        )
        assert_links_kept(tmp_path / "back", links)

    def test_the_standard_tools_restore_the_same_links(self, node, linked_tree, tmp_path, age_key):
        root, _outside, links = linked_tree
        manifest = node.backup([asset("config", root, tmp_path)])
        artifact = node.epoch_dir(manifest.epoch) / manifest.artifacts[0].file
        out = tmp_path / "by-hand"
        out.mkdir()
        subprocess.run(
            "age -d -i %s %s | zstd -d | tar -x -C %s" % (age_key.identity_path, artifact, out),
            shell=True,
            check=True,
        )
        assert_links_kept(out, links)
