"""ops/seal_path.py (module age_seal): a file or a directory sealed with age opens with the standard tools
(age, zstd, tar) and with open_path, to the same bytes and metadata; an existing destination is left alone,
a wrong identity or a hostile archive writes nothing, no recipient fails closed."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tarfile

import pytest
from tree_helpers import make_tree, member, snapshot, tar_bytes

from ansible_collections.nodekeep.backup.plugins.module_utils.core import archive
from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal as seal_utils
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    RestoreError,
    SealError,
    UnsealError,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.ops import seal_path as _seal_path_mod

pytestmark = pytest.mark.timeout(60)


class TestSealAndOpen:
    def test_a_file_is_exactly_what_age_gives_back(self, tmp_path, age_key):
        (tmp_path / "plain").write_bytes(os.urandom(100000))
        result = _seal_path_mod.seal_path(str(tmp_path / "plain"), str(tmp_path / "sealed.age"), [age_key.recipient])
        assert result["changed"] and result["content"] == "file" and not result["compressed"]
        assert oct(os.stat(tmp_path / "sealed.age").st_mode & 0o777) == "0o600"
        plain = subprocess.run(
            ["age", "-d", "-i", str(age_key.identity_path), str(tmp_path / "sealed.age")],
            capture_output=True,
            check=True,
        ).stdout
        assert plain == (tmp_path / "plain").read_bytes()
        assert hashlib.sha256((tmp_path / "sealed.age").read_bytes()).hexdigest() == result["sha256"]
        assert result["content_sha256"] is None  # no unkeyed hash of the plaintext is reported
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    def test_a_directory_opens_with_standard_tools(self, tmp_path, age_key):
        src = make_tree(tmp_path / "src")
        result = _seal_path_mod.seal_path(src, str(tmp_path / "tree.age"), [age_key.recipient])
        assert result["content"] == "directory" and result["compressed"] and result["entries"]["files"] == 3
        (tmp_path / "cli").mkdir()
        subprocess.run(
            "age -d -i %s %s | zstd -d | tar -xp -C %s"
            % (age_key.identity_path, tmp_path / "tree.age", tmp_path / "cli"),
            shell=True,
            check=True,
        )
        assert snapshot(tmp_path / "cli") == snapshot(src)
        opened = _seal_path_mod.open_path(str(tmp_path / "tree.age"), str(tmp_path / "back"), [age_key.identity])
        assert opened["content"] == "directory" and opened["content_sha256"] == result["content_sha256"]
        assert snapshot(tmp_path / "back") == snapshot(src)

    def test_an_existing_dest_is_left_alone(self, tmp_path, age_key):
        (tmp_path / "plain").write_text("x")
        (tmp_path / "sealed.age").write_text("something else")
        result = _seal_path_mod.seal_path(str(tmp_path / "plain"), str(tmp_path / "sealed.age"), [age_key.recipient])
        assert result["changed"] is False and result["skipped"] is True
        assert (tmp_path / "sealed.age").read_text() == "something else"

    def test_a_tar_sealed_as_a_file_opens_as_a_file_when_asked(self, tmp_path, age_key):
        src = make_tree(tmp_path / "src")
        with archive.tar_reader(src) as stream:
            (tmp_path / "t.tar").write_bytes(stream.read())
        _seal_path_mod.seal_path(str(tmp_path / "t.tar"), str(tmp_path / "t.age"), [age_key.recipient])
        as_tree = _seal_path_mod.open_path(str(tmp_path / "t.age"), str(tmp_path / "auto"), [age_key.identity])
        assert as_tree["content"] == "directory"
        as_file = _seal_path_mod.open_path(str(tmp_path / "t.age"), str(tmp_path / "file"), [age_key.identity], content="file")
        assert as_file["content"] == "file"
        assert (tmp_path / "file").read_bytes() == (tmp_path / "t.tar").read_bytes()

    def test_wrong_identity_writes_nothing(self, tmp_path, age_key, other_age_key):
        (tmp_path / "plain").write_text("x" * 100000)
        _seal_path_mod.seal_path(str(tmp_path / "plain"), str(tmp_path / "s.age"), [age_key.recipient])
        (tmp_path / "out").mkdir()
        with pytest.raises(UnsealError, match="none of the given age identities"):
            _seal_path_mod.open_path(str(tmp_path / "s.age"), str(tmp_path / "out" / "plain"), [other_age_key.identity])
        assert os.listdir(tmp_path / "out") == []

    def test_a_bad_archive_in_a_sealed_directory_writes_nothing(self, tmp_path, age_key):
        evil = tar_bytes(
            [
                (member(".", tarfile.DIRTYPE, mode=0o755), None),
                (member("x", tarfile.SYMTYPE, "/etc"), None),
                (member("x/passwd", tarfile.REGTYPE), b"x"),
            ]
        )
        sealed = seal_utils.seal_bytes(evil, seal_utils.load_recipients([age_key.recipient]))
        (tmp_path / "evil.age").write_bytes(sealed)
        (tmp_path / "out").mkdir()
        with pytest.raises(RestoreError, match="written through"):
            _seal_path_mod.open_path(str(tmp_path / "evil.age"), str(tmp_path / "out" / "tree"), [age_key.identity])
        assert os.listdir(tmp_path / "out") == []

    def test_no_recipient_fails_closed(self, tmp_path):
        (tmp_path / "plain").write_text("x")
        for recipients in ([], ["not-a-key"], ["AGE-SECRET-KEY-1XYZ"]):
            with pytest.raises(SealError):
                _seal_path_mod.seal_path(str(tmp_path / "plain"), str(tmp_path / "s.age"), recipients)
            assert sorted(os.listdir(tmp_path)) == ["plain"]

    def test_not_an_age_file(self, tmp_path, age_key):
        (tmp_path / "plain").write_text("not age")
        with pytest.raises(UnsealError, match="not an age file"):
            _seal_path_mod.open_path(str(tmp_path / "plain"), str(tmp_path / "out"), [age_key.identity])


def test_looks_like_tree(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    dot = subprocess.run(["tar", "-C", str(tmp_path / "d"), "-cf", "-", "."], capture_output=True, check=True).stdout
    named = subprocess.run(["tar", "-C", str(tmp_path), "-cf", "-", "d"], capture_output=True, check=True).stdout
    assert _seal_path_mod._looks_like_tree(dot[: archive.SNIFF_SIZE])
    assert not _seal_path_mod._looks_like_tree(named[: archive.SNIFF_SIZE])
    assert not _seal_path_mod._looks_like_tree(b"SQLite format 3\x00" + bytes(5000))
    assert not _seal_path_mod._looks_like_tree(b"")
