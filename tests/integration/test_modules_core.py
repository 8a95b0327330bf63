"""The core modules driven through their main(), as Ansible runs them: JSON in, JSON out.

epoch_backup, integrity_check, epoch_restore, epoch_info and signing_key, on real files, keys and
databases. Check mode must write nothing; engine errors must be clean failures (a message, no
traceback); secrets must never appear in a module's output.
"""

from __future__ import annotations

import importlib
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from ansible.module_utils.testing import patch_module_args

pytestmark = pytest.mark.timeout(120)

MODULES = "ansible_collections.nodekeep.backup.plugins.modules."


def _module(name: str):
    try:
        return importlib.import_module(MODULES + name)
    except ModuleNotFoundError as exc:  # the lead writes the modules; test each once it exists
        if exc.name == MODULES + name:
            pytest.skip("plugins/modules/%s.py does not exist yet" % name)
        raise


@pytest.fixture
def run_module(capsys):
    """``run_module(name, args, check_mode=False)`` -> the module's JSON result."""

    def run(name: str, args: dict, check_mode: bool = False) -> dict:
        module = _module(name)
        args = dict(args)
        if check_mode:
            args["_ansible_check_mode"] = True
        capsys.readouterr()
        with patch_module_args(args), pytest.raises(SystemExit) as excinfo:
            module.main()
        out = capsys.readouterr().out
        result = json.loads(out)
        result["_raw"] = out
        result["_rc"] = excinfo.value.code
        assert (result["_rc"] != 0) == bool(result.get("failed")), result
        return result

    return run


def _assert_clean_failure(result: dict, *needles: str) -> None:
    assert result.get("failed") is True, result
    assert "exception" not in result, "an engine error became a traceback: %s" % result.get("exception")
    assert "unexpected error" not in result["msg"]
    for needle in needles:
        assert needle.lower() in result["msg"].lower(), "%r not in %s" % (needle, result["msg"])


@pytest.fixture
def env(tmp_path, age_key, signing_key, dbtools):
    (tmp_path / "data").mkdir()
    db = dbtools.make(tmp_path / "data" / "app.db", rows=500, payload=500)
    return {
        "repository": str(tmp_path / "repo"),
        "node": "node1",
        "db": db,
        "assets": [{"name": "app-db", "type": "sqlite", "path": str(db.path)}],
        "recipient": age_key.recipient,
        "identity_file": str(age_key.identity_path),
        "identity": age_key.identity,
        "signing_key": str(signing_key.path),
        "public_key": signing_key.public_line,
    }


def _backup_args(env: dict, **extra) -> dict:
    args = {
        "repository": env["repository"],
        "node": env["node"],
        "assets": env["assets"],
        "recipients": [env["recipient"]],
        "signing_key": env["signing_key"],
    }
    args.update(extra)
    return args


@pytest.fixture
def backed_up(env, run_module) -> dict:
    result = run_module("epoch_backup", _backup_args(env))
    assert result["changed"] is True and "failed" not in result, result
    return result


# --------------------------------------------------------------------------
# epoch_backup
# --------------------------------------------------------------------------


class TestEpochBackup:
    def test_backup_writes_a_signed_epoch(self, env, backed_up, dbtools):
        epoch_dir = os.path.join(env["repository"], "node1", backed_up["epoch"])
        assert backed_up["location"] == epoch_dir
        assert sorted(os.listdir(epoch_dir)) == ["app-db.sqlite.zst.age", "manifest.json", "manifest.json.sig"]
        (artifact,) = backed_up["artifacts"]
        assert artifact["name"] == "app-db" and artifact["source"]["integrity"] == "ok"
        assert backed_up["size"] == artifact["size"] == os.path.getsize(os.path.join(epoch_dir, artifact["file"]))
        assert backed_up["manifest"]["epoch"] == backed_up["epoch"]
        assert backed_up["duration"] >= 0

    def test_check_mode_writes_nothing(self, env, run_module, tmp_path):
        result = run_module("epoch_backup", _backup_args(env), check_mode=True)
        assert result["changed"] is True and "failed" not in result, result
        assert result["assets"] == ["app-db"]
        assert "epoch" not in result
        assert not os.path.exists(env["repository"])

    def test_check_mode_still_reports_bad_input(self, env, run_module):
        result = run_module("epoch_backup", _backup_args(env, recipients=["age1broken"]), check_mode=True)
        _assert_clean_failure(result, "not a valid age recipient")

    @pytest.mark.parametrize(
        "change, needles",
        [
            ({"recipients": []}, ["no age recipient"]),
            ({"recipients": ["age1broken"]}, ["not a valid age recipient"]),
            ({"assets": [{"name": "app-db", "type": "sqlite", "path": "/nonexistent/app.db"}]}, ["/nonexistent/app.db", "does not exist"]),
            ({"repository": "relative/repo"}, ["absolute"]),
        ],
        ids=["no-recipient", "bad-recipient", "missing-db", "relative-repository"],
    )
    def test_bad_input_is_a_clean_failure_that_writes_nothing(self, env, run_module, change, needles):
        result = run_module("epoch_backup", _backup_args(env, **change))
        _assert_clean_failure(result, *needles)
        repository = os.path.join(env["repository"], "node1")
        assert not os.path.exists(repository) or os.listdir(repository) == []

    def test_a_signing_key_others_can_read_is_refused(self, env, run_module, tmp_path, signing_key):
        loose = tmp_path / "loose_key"
        loose.write_bytes(signing_key.pem)
        os.chmod(loose, 0o644)
        result = run_module("epoch_backup", _backup_args(env, signing_key=str(loose)))
        _assert_clean_failure(result, str(loose), "chmod 0600")
        assert not os.path.exists(env["repository"])

    def test_an_inline_recipient_file_secret_is_never_output(self, env, run_module, tmp_path, age_key):
        wrong = tmp_path / "recipients.txt"
        wrong.write_text(age_key.identity + "\n")
        result = run_module("epoch_backup", _backup_args(env, recipients=[], recipients_files=[str(wrong)]))
        assert result.get("failed") is True
        assert age_key.identity not in result["_raw"]


# --------------------------------------------------------------------------
# integrity_check
# --------------------------------------------------------------------------


def _check_args(env: dict, **extra) -> dict:
    args = {"repository": env["repository"], "node": env["node"], "public_key": env["public_key"]}
    args.update(extra)
    return args


class TestIntegrityCheck:
    def test_a_good_epoch_verifies(self, env, backed_up, run_module):
        result = run_module("integrity_check", _check_args(env))
        assert result["ok"] is True and result["changed"] is False, result
        assert result["epoch"] == backed_up["epoch"]
        assert result["signature"] == "valid"
        assert [a["ok"] for a in result["artifacts"]] == [True]
        assert result["problems"] == []

    @pytest.mark.parametrize("how", ["identity_files", "identities"])
    def test_deep_verify(self, env, backed_up, run_module, how):
        keys = {"identity_files": [env["identity_file"]]} if how == "identity_files" else {"identities": [env["identity"]]}
        result = run_module("integrity_check", _check_args(env, deep=True, **keys))
        assert result["ok"] is True, result
        assert result["artifacts"][0]["deep"] == "ok"
        assert result["artifacts"][0]["checks"]["integrity"] == "ok"
        assert env["identity"] not in result["_raw"]
        assert env["identity"][16:26] not in result["_raw"]

    def test_check_mode_gives_the_same_report(self, env, backed_up, run_module):
        result = run_module("integrity_check", _check_args(env), check_mode=True)
        assert result["ok"] is True and result["changed"] is False

    def test_a_tampered_artifact_fails_the_task_or_reports_when_asked(self, env, backed_up, run_module):
        path = os.path.join(backed_up["location"], "app-db.sqlite.zst.age")
        with open(path, "rb") as handle:
            data = bytearray(handle.read())
        data[len(data) // 2] ^= 1
        with open(path, "wb") as handle:
            handle.write(bytes(data))
        failed = run_module("integrity_check", _check_args(env))
        _assert_clean_failure(failed, backed_up["epoch"], "SHA-256")
        assert failed["ok"] is False
        reported = run_module("integrity_check", _check_args(env, fail_on_error=False))
        assert "failed" not in reported and reported["ok"] is False
        assert "SHA-256" in reported["problems"][0]

    def test_another_nodes_key_fails(self, env, backed_up, run_module, other_signing_key):
        result = run_module("integrity_check", _check_args(env, public_key=other_signing_key.public_line))
        _assert_clean_failure(result, "different key")
        assert result["signature"] == "invalid"

    def test_a_missing_repository_is_not_created(self, env, run_module, tmp_path):
        result = run_module("integrity_check", _check_args(env, repository=str(tmp_path / "nowhere")))
        _assert_clean_failure(result, str(tmp_path / "nowhere"))
        assert not (tmp_path / "nowhere").exists()

    def test_deep_without_identity_fails_cleanly(self, env, backed_up, run_module):
        result = run_module("integrity_check", _check_args(env, deep=True))
        _assert_clean_failure(result, "no age identity")

    def test_a_deep_verify_with_the_signing_key_records_a_proof_the_restore_trusts(self, env, run_module, tmp_path):
        quick = [dict(env["assets"][0], check="quick")]
        backed = run_module("epoch_backup", _backup_args(env, assets=quick))
        proof = os.path.join(backed["location"], "app-db.proof.json")
        args = _check_args(env, deep=True, identity_files=[env["identity_file"]], signing_key=env["signing_key"])
        dry = run_module("integrity_check", args, check_mode=True)
        assert dry["ok"] is True and dry["changed"] is False and not os.path.exists(proof), dry
        first = run_module("integrity_check", args)
        assert first["ok"] is True and first["changed"] is True, first
        assert first["artifacts"][0]["proof"] == {"file": "app-db.proof.json", "written": True}
        assert os.path.exists(proof)
        again = run_module("integrity_check", args)
        assert again["changed"] is False and again["artifacts"][0]["proof"]["written"] is False
        restored = run_module("epoch_restore", _restore_args(env, tmp_path / "staging"))
        checks = restored["artifacts"][0]["checks"]
        assert checks["integrity"] == "ok" and checks["integrity_proven"].startswith("by deep verify at "), checks
        assert "by deep verify" in restored["stats"]["assets"][0]["proven"], restored["stats"]


# --------------------------------------------------------------------------
# epoch_restore
# --------------------------------------------------------------------------


def _restore_args(env: dict, dest, **extra) -> dict:
    args = {
        "repository": env["repository"],
        "node": env["node"],
        "public_key": env["public_key"],
        "identity_files": [env["identity_file"]],
        "dest": str(dest),
    }
    args.update(extra)
    return args


def _target(env: dict, dest) -> str:
    return os.path.join(str(dest), str(env["db"].path).lstrip("/"))


class TestEpochRestore:
    def test_restore_into_staging(self, env, backed_up, run_module, tmp_path, dbtools):
        result = run_module("epoch_restore", _restore_args(env, tmp_path / "staging"))
        assert result["changed"] is True and "failed" not in result, result
        (artifact,) = result["artifacts"]
        target = _target(env, tmp_path / "staging")
        assert artifact["path"] == target
        assert artifact["source_path"] == str(env["db"].path)
        assert artifact["sha256"] is None and backed_up["artifacts"][0]["content_sha256"] is None  # no plaintext hash
        assert artifact["checks"]["integrity"] == "ok"
        assert 0 < artifact["check_seconds"] <= artifact["seconds"]  # the deep check's share (drill RTO breakdown)
        assert dbtools.rows(target) == dbtools.rows(env["db"].path)
        # The live file's owner and mode come back (recorded at backup), no wider.
        live = os.stat(env["db"].path)
        restored = os.stat(target)
        assert stat.S_IMODE(restored.st_mode) == stat.S_IMODE(live.st_mode)
        assert (restored.st_uid, restored.st_gid) == (live.st_uid, live.st_gid)

    def test_check_mode_plans_and_writes_nothing(self, env, backed_up, run_module, tmp_path):
        result = run_module("epoch_restore", _restore_args(env, tmp_path / "staging"), check_mode=True)
        assert result["changed"] is True and "failed" not in result, result
        assert result["artifacts"][0]["path"] == _target(env, tmp_path / "staging")
        assert not (tmp_path / "staging").exists()

    def test_an_existing_target_is_refused_in_check_mode_and_for_real(self, env, backed_up, run_module, tmp_path):
        first = run_module("epoch_restore", _restore_args(env, tmp_path / "staging"))
        assert "failed" not in first
        target = _target(env, tmp_path / "staging")
        with open(target, "rb") as handle:
            before = handle.read()
        for check_mode in (True, False):
            result = run_module("epoch_restore", _restore_args(env, tmp_path / "staging"), check_mode=check_mode)
            _assert_clean_failure(result, target, "exists")
        with open(target, "rb") as handle:
            assert handle.read() == before
        assert os.listdir(os.path.dirname(target)) == [os.path.basename(target)]

    def test_force_replaces_and_keeps_the_old_one(self, env, backed_up, run_module, tmp_path):
        run_module("epoch_restore", _restore_args(env, tmp_path / "staging"))
        result = run_module("epoch_restore", _restore_args(env, tmp_path / "staging", force=True))
        assert result["changed"] is True and "failed" not in result, result
        names = os.listdir(os.path.dirname(_target(env, tmp_path / "staging")))
        assert len([n for n in names if ".nodekeep-replaced-" in n]) == 1

    def test_the_wrong_identity_fails_and_writes_nothing(self, env, backed_up, run_module, tmp_path, other_age_key, files_under):
        result = run_module(
            "epoch_restore", _restore_args(env, tmp_path / "staging", identity_files=[str(other_age_key.identity_path)])
        )
        _assert_clean_failure(result, "identit")
        assert files_under(tmp_path / "staging") == []

    def test_an_unknown_epoch_fails(self, env, backed_up, run_module, tmp_path):
        result = run_module("epoch_restore", _restore_args(env, tmp_path / "staging", epoch="20200101T000000Z"))
        _assert_clean_failure(result, "20200101T000000Z", backed_up["epoch"])

    def test_inline_identities_are_never_output(self, env, backed_up, run_module, tmp_path):
        result = run_module(
            "epoch_restore", _restore_args(env, tmp_path / "staging", identity_files=[], identities=[env["identity"]])
        )
        assert "failed" not in result, result
        assert env["identity"] not in result["_raw"]


# --------------------------------------------------------------------------
# epoch_info
# --------------------------------------------------------------------------


class TestEpochInfo:
    def test_lists_complete_and_incomplete_epochs(self, env, backed_up, run_module):
        from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository

        incomplete = LocalRepository(env["repository"]).new_epoch("node1")
        result = run_module("epoch_info", {"repository": env["repository"], "node": "node1"})
        assert result["changed"] is False
        assert result["epochs"] == [backed_up["epoch"]]
        assert result["latest"] == backed_up["epoch"]
        assert result["incomplete"] == [incomplete]

    def test_with_a_public_key_an_epoch_that_does_not_verify_is_not_latest(self, env, backed_up, run_module):
        second = run_module("epoch_backup", _backup_args(env))
        manifest = os.path.join(second["location"], "manifest.json")
        with open(manifest, "ab") as handle:
            handle.write(b" ")
        result = run_module(
            "epoch_info", {"repository": env["repository"], "node": "node1", "public_key": env["public_key"]}
        )
        assert result["epochs"] == [backed_up["epoch"]]
        assert result["latest"] == backed_up["epoch"]
        assert list(result["invalid"]) == [second["epoch"]]
        assert [s["epoch"] for s in result["summaries"]] == [backed_up["epoch"]]

    def test_a_node_without_epochs(self, env, run_module, tmp_path):
        os.makedirs(env["repository"])
        result = run_module("epoch_info", {"repository": env["repository"], "node": "node1"})
        assert result["epochs"] == [] and result["latest"] is None and result["incomplete"] == []

    def test_a_missing_repository_fails_cleanly(self, run_module, tmp_path):
        result = run_module("epoch_info", {"repository": str(tmp_path / "nowhere"), "node": "node1"})
        _assert_clean_failure(result, str(tmp_path / "nowhere"))

    def test_objects_of_lists_what_a_files_epoch_needs_to_be_shipped(self, env, run_module, tmp_path):
        """The restore and drill roles ship these beside the epoch (a files asset's contents live in NODE/objects)."""
        tree = tmp_path / "tree"
        for i in range(3):
            (tree / ("d%d" % i)).mkdir(parents=True)
            (tree / ("d%d" % i) / "big.bin").write_bytes(os.urandom(300_000 + i))
        assets = env["assets"] + [{"name": "tree", "type": "files", "path": str(tree),
                                   "state_dir": str(tmp_path / "state")}]  # fmt: skip
        first = run_module("epoch_backup", _backup_args(env, assets=assets))
        (tree / "d0" / "big.bin").write_bytes(os.urandom(1000))  # the second epoch no longer needs the old content
        second = run_module("epoch_backup", _backup_args(env, assets=assets))
        args = {"repository": env["repository"], "node": "node1", "public_key": env["public_key"]}
        node_dir = Path(env["repository"]) / "node1"
        listed = {}
        for epoch in (first["epoch"], second["epoch"], "latest"):
            result = run_module("epoch_info", dict(args, objects_of=epoch))
            assert "failed" not in result, result
            paths = result["objects"]
            assert paths and paths == sorted(paths) and all(p.startswith("objects/") for p in paths)
            assert result["objects_size"] == sum((node_dir / p).stat().st_size for p in paths)
            listed[epoch] = set(paths)
        assert listed["latest"] == listed[second["epoch"]] != listed[first["epoch"]]
        stored = {str(p.relative_to(node_dir)) for p in (node_dir / "objects").rglob("*") if p.is_file()}
        assert listed[first["epoch"]] | listed[second["epoch"]] == stored
        # an SQLite-only epoch needs no object; a missing object fails, naming it
        plain = run_module("epoch_backup", _backup_args(env))
        assert run_module("epoch_info", dict(args, objects_of=plain["epoch"]))["objects"] == []
        gone = min(listed[second["epoch"]])
        (node_dir / gone).unlink()
        result = run_module("epoch_info", dict(args, objects_of=second["epoch"]))
        _assert_clean_failure(result, os.path.basename(gone), "restore another epoch")
        # a link in its place is not the object (never followed, never shipped)
        (node_dir / gone).symlink_to(node_dir / max(listed[second["epoch"]]))
        result = run_module("epoch_info", dict(args, objects_of=second["epoch"]))
        _assert_clean_failure(result, os.path.basename(gone), "regular files")
        # objects_of needs the public key (the list is read from the signed epoch)
        result = run_module("epoch_info", {"repository": env["repository"], "node": "node1", "objects_of": "latest"})
        _assert_clean_failure(result, "public_key")


# --------------------------------------------------------------------------
# signing_key, and the whole chain through modules only
# --------------------------------------------------------------------------


class TestSigningKey:
    def test_creates_a_private_key_once(self, run_module, tmp_path):
        path = tmp_path / "etc" / "nodekeep" / "signing_key"
        first = run_module("signing_key", {"path": str(path), "comment": "node1"})
        assert first["changed"] is True and "failed" not in first, first
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        assert first["public_key"].startswith("ssh-ed25519 ") and first["public_key"].endswith(" node1")
        derived = subprocess.run(["ssh-keygen", "-y", "-f", str(path)], capture_output=True, text=True, check=True)
        assert derived.stdout.split()[:2] == first["public_key"].split()[:2]
        listed = subprocess.run(["ssh-keygen", "-l", "-f", str(path)], capture_output=True, text=True, check=True)
        assert listed.stdout.split()[1] == first["fingerprint"]
        assert "PRIVATE KEY" not in first["_raw"]

        content = path.read_bytes()
        second = run_module("signing_key", {"path": str(path), "comment": "node1"})
        assert second["changed"] is False
        assert second["public_key"] == first["public_key"]
        assert path.read_bytes() == content

    def test_diff_names_what_changes_and_never_the_key(self, run_module, tmp_path, signing_key):
        """--diff (issue 16): a new key or a tightened mode, with the public fingerprint; no key material."""
        path = tmp_path / "new" / "signing_key"
        planned = run_module("signing_key", {"path": str(path), "_ansible_diff": True}, check_mode=True)
        assert planned["diff"]["before"] == "" and planned["diff"]["after"] == "new Ed25519 key, mode 0600\n"
        made = run_module("signing_key", {"path": str(path), "_ansible_diff": True})
        assert made["diff"]["after"] == "new Ed25519 key, mode 0600\npublic key %s\n" % made["fingerprint"]
        assert "diff" not in run_module("signing_key", {"path": str(path), "_ansible_diff": True})
        loose = tmp_path / "loose_key"
        loose.write_bytes(signing_key.pem)
        os.chmod(loose, 0o644)
        tightened = run_module("signing_key", {"path": str(loose), "_ansible_diff": True}, check_mode=True)
        assert tightened["diff"]["before"].startswith("mode 0644\n") and tightened["diff"]["after"].startswith("mode 0600\n")
        assert stat.S_IMODE(os.stat(loose).st_mode) == 0o644
        for result in (planned, made, tightened):
            assert "PRIVATE KEY" not in result["_raw"] and "AAAA" not in json.dumps(result["diff"])

    def test_check_mode_creates_nothing(self, run_module, tmp_path):
        path = tmp_path / "signing_key"
        result = run_module("signing_key", {"path": str(path)}, check_mode=True)
        assert result["changed"] is True and "failed" not in result
        assert not path.exists()
        assert not os.listdir(tmp_path)

    def test_loose_permissions_are_tightened_but_the_key_is_kept(self, run_module, tmp_path, signing_key):
        path = tmp_path / "signing_key"
        path.write_bytes(signing_key.pem)
        os.chmod(path, 0o644)
        checked = run_module("signing_key", {"path": str(path)}, check_mode=True)
        assert checked["changed"] is True
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
        result = run_module("signing_key", {"path": str(path)})
        assert result["changed"] is True
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert path.read_bytes() == signing_key.pem
        assert result["public_key"].split()[:2] == signing_key.public_line.split()[:2]

    def test_a_directory_is_refused(self, run_module, tmp_path):
        result = run_module("signing_key", {"path": str(tmp_path)})
        _assert_clean_failure(result, str(tmp_path), "directory")


def test_the_whole_chain_through_modules(run_module, tmp_path, age_key, dbtools):
    """signing_key -> epoch_backup -> epoch_info -> integrity_check (deep) -> epoch_restore."""
    key = run_module("signing_key", {"path": str(tmp_path / "key" / "signing_key"), "comment": "node1"})
    db = dbtools.make(tmp_path / "app.db", rows=300)
    common = {"repository": str(tmp_path / "repo"), "node": "node1"}
    backup = run_module(
        "epoch_backup",
        dict(
            common,
            assets=[{"name": "app-db", "type": "sqlite", "path": str(db.path)}],
            recipients=[age_key.recipient],
            signing_key=key["path"],
        ),
    )
    assert "failed" not in backup, backup
    info = run_module("epoch_info", dict(common, public_key=key["public_key"]))
    assert info["latest"] == backup["epoch"] and info["invalid"] == {}
    verified = run_module(
        "integrity_check",
        dict(common, public_key=key["public_key"], deep=True, identity_files=[str(age_key.identity_path)]),
    )
    assert verified["ok"] is True, verified
    restored = run_module(
        "epoch_restore",
        dict(common, public_key=key["public_key"], identity_files=[str(age_key.identity_path)], dest=str(tmp_path / "staging")),
    )
    assert "failed" not in restored, restored
    assert dbtools.rows(restored["artifacts"][0]["path"]) == dbtools.rows(db.path)
