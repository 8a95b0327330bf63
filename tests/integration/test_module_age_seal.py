"""Module age_seal, driven through main(), with interop both ways against the real age CLI (and zstd, GNU tar)."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path

import pytest
from module_driver import failed, run_module, succeeded

pytestmark = pytest.mark.timeout(120)

AS_ROOT = os.geteuid() == 0


def seal(args: dict, check_mode: bool = False) -> dict:
    return run_module("age_seal", dict(args, state="sealed"), check_mode=check_mode)


def open_(args: dict, check_mode: bool = False) -> dict:
    return run_module("age_seal", dict(args, state="opened"), check_mode=check_mode)


def digest(path) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def age_decrypt(identity_path, path) -> bytes:
    return subprocess.run(["age", "-d", "-i", str(identity_path), str(path)], capture_output=True, check=True).stdout


def snapshot(root) -> dict:
    """Type, mode, numeric owner, mtime (ns), content or link target of everything under ``root``."""
    root = str(root)
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            entry = [stat.S_IFMT(info.st_mode), info.st_uid, info.st_gid, info.st_mtime_ns]
            if stat.S_ISLNK(info.st_mode):
                entry.append(os.readlink(path))
            else:
                entry.append(stat.S_IMODE(info.st_mode))
            if stat.S_ISREG(info.st_mode):
                entry.append(digest(path))
            found[os.path.relpath(path, root)] = entry
    top = os.lstat(root)
    found["."] = [stat.S_IMODE(top.st_mode), top.st_mtime_ns]
    return found


@pytest.fixture
def tree(tmp_path):
    """A directory with set-id and sticky modes, private files, foreign owners, ns mtimes, links and a FIFO."""
    root = tmp_path / "keys"
    (root / "validator" / "deep").mkdir(parents=True)
    (root / "shared").mkdir()
    (root / "validator" / "key.json").write_bytes(os.urandom(5000))
    (root / "validator" / "big.bin").write_bytes(os.urandom(2 << 20))
    (root / ".env").write_text("TOKEN=abc\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(root / "validator" / "key.json", 0o400)
    os.chmod(root / "validator", 0o700)
    os.chmod(root / "run.sh", 0o2755)
    os.chmod(root / "shared", 0o1777)
    os.symlink("validator/key.json", root / "current")
    os.symlink("../nowhere-inside", root / "validator" / "dangling-inside")
    os.link(root / ".env", root / "env.hardlink")
    os.mkfifo(root / "control.fifo")
    if AS_ROOT:
        os.chown(root / "validator" / "key.json", 1001, 1002)
        os.chown(root / "shared", 54321, 54321)
        os.chown(root / "current", 1001, 1002, follow_symlinks=False)
    stamp = 1_600_000_000_123_456_789
    for rel in ("validator/key.json", "validator/deep", "shared", ".env"):
        os.utime(root / rel, ns=(stamp, stamp + 11))
    os.utime(root / "current", ns=(stamp, stamp + 22), follow_symlinks=False)
    os.utime(root / "validator", ns=(stamp, stamp + 33))
    os.utime(root, ns=(stamp, stamp + 44))
    return root


# --------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------


class TestFile:
    def test_round_trip_and_age_cli(self, tmp_path, age_key):
        plain = tmp_path / "wallet.dat"
        plain.write_bytes(os.urandom(300000))
        sealed = tmp_path / "wallet.dat.age"
        result = succeeded(seal({"src": str(plain), "dest": str(sealed), "recipients": [age_key.recipient]}))
        assert result["changed"] is True and result["content"] == "file" and result["compressed"] is False
        assert result["recipients"] == 1 and result["mode"] == "0600" and result["skipped"] is False
        assert result["sha256"] == digest(sealed) and result["size"] == result["sealed_size"] == os.path.getsize(sealed)
        assert result["content_sha256"] is None and result["content_size"] == 300000  # no plaintext hash reported
        assert oct(os.stat(sealed).st_mode & 0o777) == "0o600"
        assert age_decrypt(age_key.identity_path, sealed) == plain.read_bytes()  # exactly, no zstd inside

        back = tmp_path / "back.dat"
        opened = succeeded(
            open_({"src": str(sealed), "dest": str(back), "identity_files": [str(age_key.identity_path)]})
        )
        assert opened["changed"] is True and opened["content"] == "file" and opened["compressed"] is False
        assert back.read_bytes() == plain.read_bytes() and oct(os.stat(back).st_mode & 0o777) == "0o600"
        assert opened["sha256"] == result["sha256"] and opened["content_sha256"] is None
        assert sorted(p.name for p in tmp_path.iterdir()) == ["back.dat", "wallet.dat", "wallet.dat.age"]

    def test_compressed_file_opens_with_age_and_zstd(self, tmp_path, age_key):
        plain = tmp_path / "config.toml"
        plain.write_text("x = 1\n" * 10000)
        sealed = tmp_path / "config.toml.zst.age"
        result = succeeded(
            seal(
                {
                    "src": str(plain),
                    "dest": str(sealed),
                    "recipients": [age_key.recipient],
                    "compress": True,
                    "mode": "0640",
                }
            )
        )
        assert result["compressed"] is True and result["sealed_size"] < 10000 and result["mode"] == "0640"
        out = subprocess.run(
            "age -d -i %s %s | zstd -d" % (age_key.identity_path, sealed), shell=True, capture_output=True, check=True
        ).stdout
        assert out == plain.read_bytes()
        back = tmp_path / "back.toml"
        opened = succeeded(open_({"src": str(sealed), "dest": str(back), "identities": [age_key.identity]}))
        assert opened["compressed"] is True and back.read_bytes() == plain.read_bytes()

    def test_a_file_sealed_by_the_age_cli_opens(self, tmp_path, age_key):
        plain = tmp_path / "mnemonic.txt"
        plain.write_text("abandon " * 24)
        sealed = tmp_path / "mnemonic.age"
        subprocess.run(["age", "-r", age_key.recipient, "-o", str(sealed), str(plain)], check=True)
        back = tmp_path / "back.txt"
        result = succeeded(open_({"src": str(sealed), "dest": str(back), "identities": [age_key.identity]}))
        assert back.read_bytes() == plain.read_bytes() and result["content"] == "file"
        armored = tmp_path / "mnemonic.asc"
        subprocess.run(["age", "-a", "-r", age_key.recipient, "-o", str(armored), str(plain)], check=True)
        succeeded(open_({"src": str(armored), "dest": str(tmp_path / "back2.txt"), "identities": [age_key.identity]}))
        assert (tmp_path / "back2.txt").read_bytes() == plain.read_bytes()

    def test_ssh_recipients_interoperate(self, tmp_path):
        key = tmp_path / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        plain = tmp_path / "seed"
        plain.write_bytes(os.urandom(64))
        sealed = tmp_path / "seed.age"
        succeeded(seal({"src": str(plain), "dest": str(sealed), "recipients_files": [str(key) + ".pub"]}))
        assert age_decrypt(key, sealed) == plain.read_bytes()
        succeeded(open_({"src": str(sealed), "dest": str(tmp_path / "back"), "identity_files": [str(key)]}))
        assert (tmp_path / "back").read_bytes() == plain.read_bytes()

    def test_sealing_again_is_skipped_like_creates(self, tmp_path, age_key):
        plain = tmp_path / "p"
        plain.write_text("v1")
        sealed = tmp_path / "p.age"
        args = {"src": str(plain), "dest": str(sealed), "recipients": [age_key.recipient]}
        assert succeeded(seal(args, check_mode=True))["changed"] is True
        assert not sealed.exists()
        first = succeeded(seal(args))
        again_check = succeeded(seal(args, check_mode=True))
        again = succeeded(seal(args))
        assert first["changed"] and not again_check["changed"] and not again["changed"]
        assert again["skipped"] is True and "exists" in again["msg"] and digest(sealed) == first["sha256"]
        plain.write_text("v2")
        forced = succeeded(seal(dict(args, force=True)))
        assert forced["changed"] and forced["replaced"] is True and forced["sha256"] != first["sha256"]
        assert age_decrypt(age_key.identity_path, sealed) == b"v2"
        assert sorted(os.listdir(tmp_path)) == ["p", "p.age"]

    def test_opening_again_is_skipped(self, tmp_path, age_key):
        plain = tmp_path / "p"
        plain.write_text("data")
        succeeded(seal({"src": str(plain), "dest": str(tmp_path / "p.age"), "recipients": [age_key.recipient]}))
        args = {"src": str(tmp_path / "p.age"), "dest": str(tmp_path / "out"), "identities": [age_key.identity]}
        assert succeeded(open_(args, check_mode=True))["changed"] is True and not (tmp_path / "out").exists()
        assert succeeded(open_(args))["changed"] is True
        (tmp_path / "out").write_text("edited by hand")
        assert succeeded(open_(args))["changed"] is False
        assert (tmp_path / "out").read_text() == "edited by hand"
        assert succeeded(open_(dict(args, force=True)))["changed"] is True
        assert (tmp_path / "out").read_text() == "data"


# --------------------------------------------------------------------------
# directories
# --------------------------------------------------------------------------


class TestDirectory:
    def test_round_trip_keeps_modes_owners_mtimes_and_links(self, tmp_path, tree, age_key):
        sealed = tmp_path / "keys.tar.zst.age"
        result = succeeded(seal({"src": str(tree), "dest": str(sealed), "recipients": [age_key.recipient]}))
        assert result["content"] == "directory" and result["compressed"] is True
        assert result["entries"]["files"] == 4 and result["entries"]["hardlinks"] == 1
        assert result["entries"]["symlinks"] == 2 and result["entries"]["other"] == 1
        back = tmp_path / "restored"
        opened = succeeded(
            open_({"src": str(sealed), "dest": str(back), "identity_files": [str(age_key.identity_path)]})
        )
        assert opened["content"] == "directory" and opened["entries"]["files"] == 4
        assert opened["content_sha256"] is None and opened["sha256"] == result["sha256"]
        assert snapshot(back) == snapshot(tree)
        assert os.stat(back / ".env").st_ino == os.stat(back / "env.hardlink").st_ino
        assert sorted(p.name for p in tmp_path.iterdir()) == ["keys", "keys.tar.zst.age", "restored"]

    def test_standard_tools_restore_a_sealed_directory(self, tmp_path, tree, age_key):
        sealed = tmp_path / "keys.age"
        succeeded(seal({"src": str(tree), "dest": str(sealed), "recipients": [age_key.recipient]}))
        out = tmp_path / "by-hand"
        out.mkdir()
        subprocess.run(
            "age -d -i %s %s | zstd -d | tar -xp --numeric-owner -C %s" % (age_key.identity_path, sealed, out),
            shell=True,
            check=True,
        )
        assert snapshot(out) == snapshot(tree)

    def test_a_directory_sealed_by_the_cli_opens_as_a_directory(self, tmp_path, tree, age_key):
        sealed = tmp_path / "cli.tar.zst.age"
        subprocess.run(
            "tar --format=posix -C %s -cf - . | zstd -q | age -r %s -o %s" % (tree, age_key.recipient, sealed),
            shell=True,
            check=True,
        )
        back = tmp_path / "back"
        result = succeeded(open_({"src": str(sealed), "dest": str(back), "identities": [age_key.identity]}))
        assert result["content"] == "directory" and result["compressed"] is True
        assert snapshot(back) == snapshot(tree)

    def test_force_keeps_a_replaced_directory(self, tmp_path, tree, age_key):
        sealed = tmp_path / "keys.age"
        succeeded(seal({"src": str(tree), "dest": str(sealed), "recipients": [age_key.recipient]}))
        dest = tmp_path / "restored"
        dest.mkdir()
        (dest / "mine").write_text("do not lose me")
        args = {"src": str(sealed), "dest": str(dest), "identities": [age_key.identity]}
        assert succeeded(open_(args))["changed"] is False
        result = succeeded(open_(dict(args, force=True)))
        kept = result["replaced_path"]
        assert kept.startswith(str(dest) + ".nodekeep-replaced-") and result["replaced"] is True
        assert Path(os.path.join(kept, "mine")).read_text() == "do not lose me"
        assert snapshot(dest) == snapshot(tree)

    def test_outside_symlinks_are_listed_and_opened_as_links(self, tmp_path, age_key):
        src = tmp_path / "conf"
        src.mkdir()
        (src / "app.conf").write_text("x")
        os.symlink("/etc/hostname", src / "hostname")
        sealed = tmp_path / "conf.age"
        result = succeeded(seal({"src": str(src), "dest": str(sealed), "recipients": [age_key.recipient]}))
        assert result["entries"]["outside_links"] == [{"path": "hostname", "target": "/etc/hostname"}]
        succeeded(open_({"src": str(sealed), "dest": str(tmp_path / "back"), "identities": [age_key.identity]}))
        assert os.readlink(tmp_path / "back" / "hostname") == "/etc/hostname"
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# --------------------------------------------------------------------------
# refusals: a clear error and nothing written
# --------------------------------------------------------------------------


class TestRefusals:
    def test_wrong_identity(self, tmp_path, age_key, other_age_key):
        plain = tmp_path / "p"
        plain.write_bytes(os.urandom(200000))
        succeeded(seal({"src": str(plain), "dest": str(tmp_path / "p.age"), "recipients": [age_key.recipient]}))
        out = tmp_path / "out"
        out.mkdir()
        for dest in (out / "file", out / "tree"):
            result = open_({"src": str(tmp_path / "p.age"), "dest": str(dest), "identities": [other_age_key.identity]})
            failed(result, "none of the given age identities")
            assert other_age_key.identity not in result["_stdout"]  # no_log: the secret is never printed
        assert os.listdir(out) == []

    @pytest.mark.parametrize(
        "recipients, needle",
        [
            ([], "no age recipient"),
            (["age1notakey"], "not a valid age recipient"),
            (["AGE-SECRET-KEY-1ABC"], "identity"),
        ],
        ids=["none", "invalid", "secret-key"],
    )
    def test_no_usable_recipient(self, tmp_path, recipients, needle):
        plain = tmp_path / "p"
        plain.write_text("secret")
        for check_mode in (True, False):
            failed(
                seal({"src": str(plain), "dest": str(tmp_path / "p.age"), "recipients": recipients}, check_mode), needle
            )
        assert os.listdir(tmp_path) == ["p"]

    def test_no_identity(self, tmp_path, age_key):
        plain = tmp_path / "p"
        plain.write_text("secret")
        succeeded(seal({"src": str(plain), "dest": str(tmp_path / "p.age"), "recipients": [age_key.recipient]}))
        failed(open_({"src": str(tmp_path / "p.age"), "dest": str(tmp_path / "out")}), "no age identity")
        assert not (tmp_path / "out").exists()

    def test_a_missing_source_and_a_missing_directory(self, tmp_path, age_key):
        failed(
            seal({"src": str(tmp_path / "nope"), "dest": str(tmp_path / "x.age"), "recipients": [age_key.recipient]}),
            "does not exist",
        )
        (tmp_path / "p").write_text("x")
        failed(
            seal(
                {"src": str(tmp_path / "p"), "dest": str(tmp_path / "no" / "x.age"), "recipients": [age_key.recipient]}
            ),
            "does not exist",
            "create",
        )
        failed(
            open_({"src": str(tmp_path / "p"), "dest": str(tmp_path / "out"), "identities": [age_key.identity]}),
            "not an age file",
        )
        assert sorted(os.listdir(tmp_path)) == ["p"]

    def test_a_truncated_sealed_file(self, tmp_path, age_key):
        plain = tmp_path / "p"
        plain.write_bytes(os.urandom(500000))
        succeeded(seal({"src": str(plain), "dest": str(tmp_path / "p.age"), "recipients": [age_key.recipient]}))
        data = (tmp_path / "p.age").read_bytes()
        (tmp_path / "cut.age").write_bytes(data[: len(data) // 2])
        failed(
            open_({"src": str(tmp_path / "cut.age"), "dest": str(tmp_path / "out"), "identities": [age_key.identity]}),
            "modified or truncated",
        )
        assert not (tmp_path / "out").exists()
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
