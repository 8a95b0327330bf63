"""Secrets never leak through a hash, an echoed input or an exposed identity file (issue 13, "Secrets").

- No unkeyed hash of a secret's plaintext in the manifest or in any module result: a 6-digit
  password's SHA-256 is found again by trying the 10^6 candidates in well under a second.
  Integrity still holds: the signed manifest pins the sealed bytes, age authenticates them.
- A secret key given where a public value is expected is refused and never echoed, not even in
  ``invocation.module_args`` (what ``-vvv`` shows).
- An age identity file that group or others can read is refused, by every module that decrypts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat

import pytest
from module_driver import run_module, succeeded

from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError

PASSWORD = b"493817\n"


def plain_digests(data: bytes) -> set[str]:
    """Every unkeyed digest of the secret a reader could test a guess against."""
    found = set()
    for variant in (data, data.strip()):
        for algorithm in ("sha256", "sha1", "md5", "sha512", "blake2b"):
            found.add(hashlib.new(algorithm, variant).hexdigest())
    return found


def assert_no_plain_digest(text: str, data: bytes) -> None:
    for digest in plain_digests(data):
        assert digest not in text.lower(), "an unkeyed hash of the secret's plaintext was found"


@pytest.fixture
def secret_epoch(tmp_path, age_key, signing_key):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "db-password").write_bytes(PASSWORD)
    os.chmod(secrets / "db-password", 0o600)
    tree = secrets / "env"
    tree.mkdir()
    (tree / ".env").write_bytes(b"PIN=" + PASSWORD)
    args = {
        "repository": str(tmp_path / "repo"),
        "node": "node1",
        "signing_key": str(signing_key.path),
        "recipients": [age_key.recipient],
        "assets": [
            {"name": "db-password", "type": "secret", "path": str(secrets / "db-password")},
            {"name": "env", "type": "secret", "path": str(tree)},
        ],
    }
    result = succeeded(run_module("epoch_backup", args))
    return args, result, tmp_path / "repo" / "node1" / result["epoch"], tree


class TestNoPlaintextHashOfASecret:
    def test_manifest_and_backup_result_hold_no_plaintext_hash(self, secret_epoch):
        _args, result, epoch_dir, _tree = secret_epoch
        manifest = (epoch_dir / "manifest.json").read_text()
        for text in (manifest, result["_stdout"]):
            assert_no_plain_digest(text, PASSWORD)
        entry = next(a for a in json.loads(manifest)["artifacts"] if a["name"] == "db-password")
        assert entry["content_sha256"] is None
        # The 6-digit search that recovered the password from e320990's manifest finds nothing now.
        digests = set(re.findall(r"[0-9a-f]{64}", manifest))
        found = [n for n in range(1000000) if hashlib.sha256(b"%06d\n" % n).hexdigest() in digests]
        assert found == []
        for artifact in json.loads(manifest)["artifacts"]:
            assert artifact["sha256"] == hashlib.sha256((epoch_dir / artifact["file"]).read_bytes()).hexdigest()

    def test_verify_and_restore_results_hold_none_and_still_prove_integrity(
        self, secret_epoch, age_key, signing_key, tmp_path
    ):
        args, _result, epoch_dir, _tree = secret_epoch
        common = {"repository": args["repository"], "node": "node1", "public_key": signing_key.public_line}
        deep = succeeded(
            run_module("integrity_check", dict(common, deep=True, identity_files=[str(age_key.identity_path)]))
        )
        assert deep["ok"] is True
        restored = succeeded(
            run_module(
                "epoch_restore",
                dict(common, identity_files=[str(age_key.identity_path)], dest=str(tmp_path / "staging")),
            )
        )
        planned = succeeded(
            run_module(
                "epoch_restore",
                dict(common, identity_files=[str(age_key.identity_path)], dest=str(tmp_path / "staging2")),
                check_mode=True,
            )
        )
        for result in (deep, restored, planned):
            assert_no_plain_digest(result["_stdout"], PASSWORD)
        staged = tmp_path / "staging" / str(epoch_dir.parent.parent.parent / "secrets" / "db-password").lstrip("/")
        assert staged.read_bytes() == PASSWORD

        # A sealed artifact with one byte changed is refused by verify and restore (age + the signed hash).
        target = epoch_dir / "db-password.zst.age"
        data = bytearray(target.read_bytes())
        data[-3] ^= 0x01
        os.chmod(target, 0o600)
        target.write_bytes(bytes(data))
        damaged = run_module("integrity_check", dict(common, deep=True, identity_files=[str(age_key.identity_path)]))
        assert damaged["ok"] is False
        refused = run_module(
            "epoch_restore",
            dict(common, identity_files=[str(age_key.identity_path)], dest=str(tmp_path / "staging3")),
        )
        assert refused.get("failed") is True
        assert not (tmp_path / "staging3" / str(staged.relative_to(tmp_path / "staging"))).exists()

    def test_a_secret_artifact_without_a_content_hash_still_needs_a_valid_age_payload(
        self, secret_epoch, age_key, signing_key, tmp_path
    ):
        """The signed sealed SHA-256 is what pins the plaintext: an artifact swapped for another sealed file fails."""
        args, _result, epoch_dir, _tree = secret_epoch
        other = seal.seal_bytes(b"123456\n", seal.load_recipients([age_key.recipient]))
        target = epoch_dir / "db-password.zst.age"
        os.chmod(target, 0o600)
        target.write_bytes(other)
        report = run_module(
            "integrity_check",
            {
                "repository": args["repository"],
                "node": "node1",
                "public_key": signing_key.public_line,
                "deep": True,
                "identity_files": [str(age_key.identity_path)],
            },
        )
        assert report["ok"] is False
        assert any("db-password" in problem for problem in report["problems"])


SECRET_INPUTS = ["age_seal", "epoch_backup", "integrity_check", "epoch_restore", "epoch_info"]


class TestASecretWhereAPublicValueIsExpected:
    @pytest.mark.parametrize("module", SECRET_INPUTS)
    def test_refused_and_never_echoed(self, module, age_key, signing_key, tmp_path):
        secret_file = tmp_path / "data"
        secret_file.write_bytes(b"x")
        repo = str(tmp_path / "repo")
        identity = age_key.identity
        pem = signing_key.pem.decode()
        args = {
            "age_seal": {
                "state": "sealed",
                "src": str(secret_file),
                "dest": str(tmp_path / "out.age"),
                "recipients": [identity],
            },
            "epoch_backup": {
                "repository": repo,
                "node": "node1",
                "signing_key": str(signing_key.path),
                "recipients": ["  " + identity],
                "assets": [{"name": "s", "type": "secret", "path": str(secret_file)}],
            },
            "integrity_check": {"repository": repo, "node": "node1", "public_key": pem},
            "epoch_restore": {
                "repository": repo,
                "node": "node1",
                "public_key": pem,
                "dest": str(tmp_path / "t"),
                "identity_files": [str(age_key.identity_path)],
            },
            "epoch_info": {"repository": repo, "node": "node1", "public_key": pem},
        }[module]
        if module != "age_seal" and module != "epoch_backup":
            succeeded(
                run_module(
                    "epoch_backup",
                    {
                        "repository": repo,
                        "node": "node1",
                        "signing_key": str(signing_key.path),
                        "recipients": [age_key.recipient],
                        "assets": [{"name": "s", "type": "secret", "path": str(secret_file)}],
                    },
                )
            )
        result = run_module(module, args)
        out = result["_stdout"]
        assert identity not in out and identity.lower() not in out
        for line in pem.splitlines():
            if len(line) > 20 and "PRIVATE KEY" not in line:
                assert line not in out, "a line of the private key was echoed"
        assert result.get("failed") is True or result.get("ok") is False or module == "epoch_info"
        if result.get("failed"):
            assert (
                "secret" in result["msg"].lower()
                or "private" in result["msg"].lower()
                or "public key" in result["msg"].lower()
            ), result["msg"]


class TestAnExposedIdentityFile:
    @pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
    def test_engine_refuses_it_naming_the_variable(self, age_key, tmp_path, mode):
        exposed = tmp_path / "identity.txt"
        exposed.write_bytes(age_key.identity_path.read_bytes())
        os.chmod(exposed, mode)
        with pytest.raises(NodekeepError) as caught:
            seal.load_identities([], [str(exposed)])
        assert "group or others" in caught.value.message
        assert "nodekeep_age_identity_file" in caught.value.remedy
        assert age_key.identity not in str(caught.value.to_result())

    @pytest.mark.parametrize("module", ["epoch_restore", "integrity_check", "age_seal"])
    def test_every_module_that_decrypts_refuses_it(self, module, secret_epoch, age_key, signing_key, tmp_path):
        args, _result, epoch_dir, _tree = secret_epoch
        exposed = tmp_path / "identity.txt"
        exposed.write_bytes(age_key.identity_path.read_bytes())
        os.chmod(exposed, 0o644)
        common = {"repository": args["repository"], "node": "node1", "public_key": signing_key.public_line}
        call = {
            "epoch_restore": dict(common, identity_files=[str(exposed)], dest=str(tmp_path / "t")),
            "integrity_check": dict(common, deep=True, identity_files=[str(exposed)]),
            "age_seal": {
                "state": "opened",
                "src": str(epoch_dir / "db-password.zst.age"),
                "dest": str(tmp_path / "opened"),
                "identity_files": [str(exposed)],
            },
        }[module]
        result = run_module(module, call)
        text = result["_stdout"]
        assert "group or others" in text
        assert age_key.identity not in text
        assert not (tmp_path / "opened").exists() and not (tmp_path / "t").exists()

    def test_the_age_cli_made_file_is_accepted(self, age_key):
        assert stat.S_IMODE(age_key.identity_path.stat().st_mode) == 0o600
        assert seal.load_identities([], [str(age_key.identity_path)])
