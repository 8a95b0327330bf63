"""age_seal for secrets: several custodians (X25519, SSH ed25519 and RSA), ASCII armor, passphrase mode,
identities from strings and files, and the keys epoch (state=epoch), each checked with Debian's `age` CLI both ways.

Passphrase mode of the `age` CLI reads the passphrase from the terminal only, so the CLI runs in a pty here.
"""

from __future__ import annotations

import base64
import json
import os
import pty
import select
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from module_driver import failed, run_module, succeeded

from ansible_collections.nodekeep.backup.plugins.module_utils.core import armor

pytestmark = pytest.mark.timeout(120)

PASSPHRASE = "correct horse battery staple 7e1f"
SECRET = b"abandon ability able about above absent absorb abstract absurd abuse access accident\n"


@dataclass(frozen=True)
class Custodian:
    name: str
    recipient: str
    identity_file: Path
    identity_text: str


def _age_custodian(directory: Path) -> Custodian:
    path = directory / "alice.txt"
    subprocess.run(["age-keygen", "-o", str(path)], capture_output=True, check=True)
    recipient = subprocess.run(["age-keygen", "-y", str(path)], capture_output=True, text=True, check=True).stdout
    text = next(line for line in path.read_text().splitlines() if line.startswith("AGE-SECRET-KEY-"))
    return Custodian("alice", recipient.strip(), path, text)


def _ssh_custodian(directory: Path, name: str, kind: str) -> Custodian:
    path = directory / name
    extra = ["-b", "2048"] if kind == "rsa" else []
    subprocess.run(["ssh-keygen", "-q", "-t", kind, *extra, "-N", "", "-C", name, "-f", str(path)], check=True)
    return Custodian(name, (directory / (name + ".pub")).read_text().strip(), path, path.read_text())


@pytest.fixture(scope="module")
def custodians(tmp_path_factory) -> list[Custodian]:
    directory = tmp_path_factory.mktemp("custodians")
    return [
        _age_custodian(directory),
        _ssh_custodian(directory, "bob", "ed25519"),
        _ssh_custodian(directory, "carol", "rsa"),
    ]


@pytest.fixture
def secret_file(tmp_path) -> Path:
    path = tmp_path / "mnemonic.txt"
    path.write_bytes(SECRET)
    path.chmod(0o600)
    return path


def age_decrypt(identity: Path, path: Path) -> bytes:
    return subprocess.run(["age", "-d", "-i", str(identity), str(path)], capture_output=True, check=True).stdout


def age_with_tty(args: list[str], passphrase: str, timeout: float = 60.0) -> tuple[int, str]:
    """Run the age CLI with a pty as its terminal, answering every passphrase prompt."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execvp("age", ["age", *args])
    seen = b""
    answered = 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready = select.select([fd], [], [], 0.2)[0]
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
                if seen.count(b"assphrase") > answered and seen.rstrip().endswith(b":"):
                    os.write(fd, passphrase.encode() + b"\n")
                    answered += 1
            finished, status = os.waitpid(pid, os.WNOHANG)
            if finished:
                return os.waitstatus_to_exitcode(status), seen.decode(errors="replace")
        os.kill(pid, 9)
    finally:
        os.close(fd)
    status = os.waitpid(pid, 0)[1]
    return os.waitstatus_to_exitcode(status), seen.decode(errors="replace")


def seal(args: dict, check_mode: bool = False) -> dict:
    return run_module("age_seal", dict(args, state="sealed"), check_mode=check_mode)


def open_(args: dict, check_mode: bool = False) -> dict:
    return run_module("age_seal", dict(args, state="opened"), check_mode=check_mode)


class TestSeveralCustodians:
    @pytest.mark.parametrize("armored", [False, True], ids=["binary", "armored"])
    def test_sealed_to_three_custodians_each_decrypts_with_the_cli(self, custodians, secret_file, tmp_path, armored):
        recipients_file = tmp_path / "custodians.txt"
        recipients_file.write_text("# carol (RSA)\n%s\n\n" % custodians[2].recipient)
        dest = tmp_path / "mnemonic.age"
        result = succeeded(
            seal(
                {
                    "src": str(secret_file),
                    "dest": str(dest),
                    "recipients": [custodians[0].recipient, custodians[1].recipient],
                    "recipients_files": [str(recipients_file)],
                    "armor": armored,
                }
            )
        )
        assert result["recipients"] == 3 and result["armored"] is armored
        data = dest.read_bytes()
        assert data.startswith(armor.AGE_ARMOR_MAGIC if armored else armor.AGE_MAGIC)
        assert result["sha256"] == __import__("hashlib").sha256(data).hexdigest()
        assert result["sealed_size"] == len(data)
        assert dest.stat().st_mode & 0o777 == 0o600
        for custodian in custodians:
            assert age_decrypt(custodian.identity_file, dest) == SECRET, custodian.name

    def test_cli_sealed_to_three_custodians_opens_with_each_identity(self, custodians, secret_file, tmp_path):
        sealed = tmp_path / "from-cli.age"
        recipients_file = tmp_path / "r.txt"
        recipients_file.write_text("\n".join(c.recipient for c in custodians[1:]) + "\n")
        subprocess.run(
            [
                "age",
                "-a",
                "-r",
                custodians[0].recipient,
                "-R",
                str(recipients_file),
                "-o",
                str(sealed),
                str(secret_file),
            ],
            check=True,
        )
        assert sealed.read_bytes().startswith(armor.AGE_ARMOR_MAGIC)
        for number, custodian in enumerate(custodians):
            dest = tmp_path / ("opened-%d" % number)
            given = (
                {"identities": [custodian.identity_text]}  # an identity as a string (age or OpenSSH text)
                if number != 1
                else {"identity_files": [str(custodian.identity_file)]}
            )
            result = succeeded(open_(dict(given, src=str(sealed), dest=str(dest))))
            assert dest.read_bytes() == SECRET
            assert result["sha256"] == __import__("hashlib").sha256(sealed.read_bytes()).hexdigest()
            assert custodian.identity_text.split("\n")[0][20:60] not in result["_stdout"]

    def test_an_identity_of_nobody_is_refused_and_nothing_is_written(self, custodians, secret_file, tmp_path):
        dest = tmp_path / "m.age"
        succeeded(seal({"src": str(secret_file), "dest": str(dest), "recipients": [custodians[0].recipient]}))
        other = _ssh_custodian(tmp_path, "mallory", "ed25519")
        result = open_({"src": str(dest), "dest": str(tmp_path / "out"), "identity_files": [str(other.identity_file)]})
        failed(result, "none of the given age identities")
        assert not (tmp_path / "out").exists()


class TestArmor:
    def test_armor_is_the_age_format_64_columns(self, custodians, tmp_path):
        src = tmp_path / "big"
        src.write_bytes(os.urandom(10000))
        dest = tmp_path / "big.age"
        succeeded(seal({"src": str(src), "dest": str(dest), "recipients": [custodians[0].recipient], "armor": True}))
        lines = dest.read_bytes().split(b"\n")
        assert lines[0] == armor.AGE_ARMOR_MAGIC and lines[-2] == armor.AGE_ARMOR_END and lines[-1] == b""
        body = lines[1:-2]
        assert all(len(line) == 64 for line in body[:-1]) and 0 < len(body[-1]) <= 64
        binary = base64.b64decode(b"".join(body))
        assert binary.startswith(armor.AGE_MAGIC)
        # the CLI re-armors the same binary file byte for byte like we do
        assert armor.armor_bytes(binary) == dest.read_bytes()
        assert age_decrypt(custodians[0].identity_file, dest) == src.read_bytes()

    def test_an_armored_directory_round_trips_through_the_cli(self, custodians, tmp_path):
        tree = tmp_path / "keys"
        (tree / "sub").mkdir(parents=True)
        (tree / "sub" / "node.key").write_bytes(os.urandom(64))
        dest = tmp_path / "keys.age"
        succeeded(seal({"src": str(tree), "dest": str(dest), "recipients": [custodians[1].recipient], "armor": True}))
        out = tmp_path / "x"
        out.mkdir()
        subprocess.run(
            "age -d -i %s %s | zstd -d | tar -x -C %s" % (custodians[1].identity_file, dest, out),
            shell=True,
            check=True,
        )
        assert (out / "sub" / "node.key").read_bytes() == (tree / "sub" / "node.key").read_bytes()
        opened = tmp_path / "opened"
        succeeded(open_({"src": str(dest), "dest": str(opened), "identity_files": [str(custodians[1].identity_file)]}))
        assert (opened / "sub" / "node.key").read_bytes() == (tree / "sub" / "node.key").read_bytes()

    def test_a_damaged_armor_is_refused_naming_the_armor(self, custodians, secret_file, tmp_path):
        dest = tmp_path / "m.age"
        succeeded(
            seal({"src": str(secret_file), "dest": str(dest), "recipients": [custodians[0].recipient], "armor": True})
        )
        lines = dest.read_bytes().split(b"\n")
        lines[1] = lines[1][:-1]  # a short line in the middle
        dest.write_bytes(b"\n".join(lines))
        result = open_({"src": str(dest), "dest": str(tmp_path / "o"), "identities": [custodians[0].identity_text]})
        failed(result, "armored age file is malformed")
        assert not (tmp_path / "o").exists()


class TestPassphrase:
    def test_module_to_cli_and_cli_to_module(self, secret_file, tmp_path):
        ours = tmp_path / "ours.age"
        result = succeeded(seal({"src": str(secret_file), "dest": str(ours), "passphrase": PASSPHRASE, "armor": True}))
        assert result["passphrase"] is True and result["recipients"] == 0
        assert PASSPHRASE not in result["_stdout"]
        out = tmp_path / "cli-out"
        code, transcript = age_with_tty(["-d", "-o", str(out), str(ours)], PASSPHRASE)
        assert code == 0, transcript
        assert out.read_bytes() == SECRET

        theirs = tmp_path / "theirs.age"
        code, transcript = age_with_tty(["-p", "-o", str(theirs), str(secret_file)], PASSPHRASE)
        assert code == 0, transcript
        assert b"scrypt" in theirs.read_bytes()[:200]
        dest = tmp_path / "opened"
        result = succeeded(open_({"src": str(theirs), "dest": str(dest), "passphrase": PASSPHRASE}))
        assert dest.read_bytes() == SECRET and dest.stat().st_mode & 0o777 == 0o600
        assert PASSPHRASE not in result["_stdout"]

    def test_a_wrong_passphrase_is_refused_and_nothing_is_written(self, secret_file, tmp_path):
        sealed = tmp_path / "s.age"
        succeeded(seal({"src": str(secret_file), "dest": str(sealed), "passphrase": PASSPHRASE}))
        result = open_({"src": str(sealed), "dest": str(tmp_path / "o"), "passphrase": "not it"})
        failed(result, "passphrase does not open this file")
        assert not (tmp_path / "o").exists()
        assert "not it" not in result["_stdout"]

    def test_content_over_the_limit_is_refused_before_encrypting(self, tmp_path):
        big = tmp_path / "big"
        big.write_bytes(b"x" * (armor.MAX_PASSPHRASE_PAYLOAD + 1))
        result = seal({"src": str(big), "dest": str(tmp_path / "big.age"), "passphrase": PASSPHRASE})
        failed(result, "1024 KiB", "passphrase mode", "recipients")
        assert not (tmp_path / "big.age").exists()
        assert [p.name for p in tmp_path.iterdir()] == ["big"]

    def test_a_passphrase_file_opened_with_identities_says_so(self, custodians, secret_file, tmp_path):
        sealed = tmp_path / "s.age"
        succeeded(seal({"src": str(secret_file), "dest": str(sealed), "passphrase": PASSPHRASE}))
        result = open_({"src": str(sealed), "dest": str(tmp_path / "o"), "identities": [custodians[0].identity_text]})
        failed(result, "encrypted with a passphrase")

    def test_passphrase_and_recipients_are_exclusive(self, custodians, secret_file, tmp_path):
        result = seal(
            {
                "src": str(secret_file),
                "dest": str(tmp_path / "x"),
                "passphrase": PASSPHRASE,
                "recipients": [custodians[0].recipient],
            }
        )
        failed(result, "passphrase excludes recipients")


class TestOpenedKeys:
    def test_an_opened_ssh_key_reports_its_public_key_and_fingerprint_only(self, custodians, tmp_path):
        node_key = _ssh_custodian(tmp_path, "node-identity", "ed25519")
        sealed = tmp_path / "node.key.age"
        succeeded(
            seal({"src": str(node_key.identity_file), "dest": str(sealed), "recipients": [custodians[0].recipient]})
        )
        dest = tmp_path / "restored.key"
        result = succeeded(open_({"src": str(sealed), "dest": str(dest), "identities": [custodians[0].identity_text]}))
        assert result["key"]["public_key"].split()[:2] == node_key.recipient.split()[:2]
        listed = subprocess.run(
            ["ssh-keygen", "-lf", str(node_key.identity_file) + ".pub"], capture_output=True, text=True, check=True
        )
        assert result["key"]["fingerprint"] == listed.stdout.split()[1]
        body = "".join(node_key.identity_text.splitlines()[1:-1])
        assert body[:40] not in result["_stdout"]

    def test_an_opened_age_identity_reports_its_recipient(self, custodians, tmp_path):
        sealed = tmp_path / "id.age"
        succeeded(
            seal(
                {"src": str(custodians[0].identity_file), "dest": str(sealed), "recipients": [custodians[1].recipient]}
            )
        )
        result = succeeded(
            open_(
                {"src": str(sealed), "dest": str(tmp_path / "id"), "identity_files": [str(custodians[1].identity_file)]}
            )
        )
        assert result["key"] == {
            "kind": "age-identity",
            "public_key": custodians[0].recipient,
            "public_keys": [custodians[0].recipient],
        }
        assert custodians[0].identity_text not in result["_stdout"]


class TestKeysEpoch:
    def test_secrets_sealed_into_a_signed_epoch(self, custodians, signing_key, tmp_path):
        node_key = _ssh_custodian(tmp_path, "node_key", "ed25519")
        env_dir = tmp_path / "env"
        env_dir.mkdir()
        (env_dir / ".env").write_text("TOKEN=%s\n" % os.urandom(8).hex())
        repository = tmp_path / "repo"
        args = {
            "state": "epoch",
            "repository": str(repository),
            "node": "node1.keys",
            "signing_key": str(signing_key.path),
            "assets": [
                {"name": "node-key", "type": "secret", "path": str(node_key.identity_file)},
                {"name": "env", "type": "secret", "path": str(env_dir)},
            ],
            "recipients": [c.recipient for c in custodians],
            "labels": {"kind": "keys"},
        }
        planned = succeeded(run_module("age_seal", args, check_mode=True))
        assert planned["changed"] and planned["assets"] == ["node-key", "env"]
        assert not repository.exists()
        result = succeeded(run_module("age_seal", args))
        epoch_dir = repository / "node1.keys" / result["epoch"]
        assert sorted(p.name for p in epoch_dir.iterdir()) == [
            "env.tar.zst.age",
            "manifest.json",
            "manifest.json.sig",
            "node-key.zst.age",
        ]
        manifest = json.loads((epoch_dir / "manifest.json").read_text())
        key_entry = next(a for a in manifest["artifacts"] if a["name"] == "node-key")
        assert key_entry["asset_type"] == "secret"
        assert key_entry["source"]["public_key"].split()[:2] == node_key.recipient.split()[:2]
        assert manifest["labels"] == {"kind": "keys"}
        verified = succeeded(
            run_module(
                "integrity_check",
                {"repository": str(repository), "node": "node1.keys", "public_key": signing_key.public_line},
            )
        )
        assert verified["ok"] is True
        for custodian in custodians:
            plain = subprocess.run(
                "age -d -i %s %s | zstd -d" % (custodian.identity_file, epoch_dir / "node-key.zst.age"),
                shell=True,
                capture_output=True,
                check=True,
            ).stdout
            assert plain == node_key.identity_file.read_bytes()

    def test_a_missing_secret_fails_before_anything_is_written(self, custodians, signing_key, tmp_path):
        result = run_module(
            "age_seal",
            {
                "state": "epoch",
                "repository": str(tmp_path / "repo"),
                "node": "node1.keys",
                "signing_key": str(signing_key.path),
                "assets": [{"name": "gone", "path": str(tmp_path / "nothing-here")}],
                "recipients": [custodians[0].recipient],
            },
        )
        failed(result, "does not exist")
        assert not (tmp_path / "repo" / "node1.keys").exists() or not any((tmp_path / "repo" / "node1.keys").iterdir())
