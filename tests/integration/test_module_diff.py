"""--diff (issue 16) of the modules that write files on the node: age_seal, shamir_split, sqlite_backup and
restore_cutover (rocksdb_checkpoint's is in rocksdb/test_module_rocksdb_checkpoint.py), driven through main().

What an operator relies on: the diff names each path the module changes, before and after (kind, size, mode,
owner; a directory's entries by name); in check mode the after side is what the real run then makes (the
kind and mode), and nothing is written; a skipped or unchanged run shows no diff; and never a byte of a secret,
a share or a hash of either in the diff nor anywhere in the module's output.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
from pathlib import Path

import pytest
from module_driver import run_module, succeeded
from playbook_helpers import PlaybookLab, require_playbook_tools

from ansible_collections.nodekeep.backup.plugins.module_utils.keys import shares as share_format

pytestmark = pytest.mark.timeout(120)

DIFF = {"_ansible_diff": True}


def diff_of(result: dict) -> dict[str, dict]:
    """The diff items by path (the header)."""
    items = result["diff"]
    assert isinstance(items, list) and items
    assert all(item["before_header"] == item["after_header"] for item in items)
    return {item["before_header"]: item for item in items}


def assert_nothing_of(result: dict, *secrets: bytes | str) -> None:
    """No secret (nor its hex, nor its SHA-256) in the module's whole output, diff included."""
    out = result["_stdout"]
    for secret in secrets:
        raw = secret.encode() if isinstance(secret, str) else secret
        for needle in (raw.hex(), hashlib.sha256(raw).hexdigest()):
            assert needle not in out
        if all(32 <= b < 127 for b in raw):
            assert raw.decode() not in out


class TestAgeSeal:
    def test_sealed_file_diff_in_check_mode_and_for_real_never_shows_the_secret(self, tmp_path, age_key):
        secret = "TOKEN=" + os.urandom(24).hex()
        src = tmp_path / "app.env"
        src.write_text(secret + "\n")
        dest = tmp_path / "app.env.age"
        args = dict(DIFF, state="sealed", src=str(src), dest=str(dest), recipients=[age_key.recipient])

        planned = succeeded(run_module("age_seal", args, check_mode=True))
        item = diff_of(planned)[str(dest)]
        assert item["before"] == "absent\n"
        assert item["after"].startswith("(check mode) would be an age file of the file %s (1 recipients" % src)
        assert "mode 0600" in item["after"]
        assert not dest.exists()

        made = succeeded(run_module("age_seal", args))
        item = diff_of(made)[str(dest)]
        assert item["before"] == "absent\n"
        assert item["after"].startswith("file, %d bytes, mode 0600, owner " % dest.stat().st_size)
        assert_nothing_of(made, secret)
        assert_nothing_of(planned, secret)

        # skipped (dest exists, force false): changed false and no diff
        again = succeeded(run_module("age_seal", args))
        assert again["changed"] is False and "diff" not in again

    def test_opened_directory_lists_entries_by_name_never_content_nor_identity(self, tmp_path, age_key):
        tree = tmp_path / "keys"
        tree.mkdir()
        key = os.urandom(32)
        (tree / "validator.key").write_bytes(key)
        sealed = tmp_path / "keys.age"
        succeeded(run_module("age_seal", {"src": str(tree), "dest": str(sealed), "recipients": [age_key.recipient]}))
        dest = tmp_path / "opened"
        args = dict(DIFF, state="opened", src=str(sealed), dest=str(dest), identities=[age_key.identity])

        planned = succeeded(run_module("age_seal", args, check_mode=True))
        assert diff_of(planned)[str(dest)]["after"].startswith("(check mode) would be %s decrypted" % sealed)
        assert not dest.exists()
        opened = succeeded(run_module("age_seal", args))
        after = diff_of(opened)[str(dest)]["after"]
        assert after.startswith("directory, mode ") and ", 1 entries\n" in after
        assert "  validator.key: file, 32 bytes, mode " in after
        assert_nothing_of(opened, key, age_key.identity)
        assert_nothing_of(planned, key, age_key.identity)

    def test_epoch_diff_names_the_new_epoch_and_its_secrets(self, tmp_path, age_key, signing_key):
        secret = tmp_path / "node.key"
        content = os.urandom(32)
        secret.write_bytes(content)
        args = dict(
            DIFF,
            state="epoch",
            repository=str(tmp_path / "repo"),
            node="node1.keys",
            assets=[{"name": "node-key", "path": str(secret)}],
            recipients=[age_key.recipient],
            signing_key=str(signing_key.path),
        )
        planned = succeeded(run_module("age_seal", args, check_mode=True))
        assert planned["diff"]["before"] == ""
        assert planned["diff"]["after"] == "(check mode) a new epoch: 1 secrets sealed to 1 recipients: node-key\n"
        made = succeeded(run_module("age_seal", args))
        assert made["diff"]["after"] == "%s: 1 secrets sealed to 1 recipients: node-key\n" % made["epoch"]
        assert_nothing_of(made, content)


class TestShamirSplit:
    def test_split_then_combine_diff_shows_files_never_shares_nor_secret(self, tmp_path):
        secret = os.urandom(32)
        src = tmp_path / "master.key"
        src.write_bytes(secret)
        dest = tmp_path / "shares"
        args = dict(DIFF, state="split", scheme="ssss", threshold=2, custodians=["alice", "bob", "carol"],
                    src=str(src), dest=str(dest))  # fmt: skip

        planned = succeeded(run_module("shamir_split", args, check_mode=True))
        item = diff_of(planned)[str(dest)]
        assert item["before"] == "absent\n" and "3 share files (mode 0600 each)" in item["after"]
        assert not dest.exists()

        made = succeeded(run_module("shamir_split", args))
        after = diff_of(made)[str(dest)]["after"]
        assert after.startswith("directory, mode 0700") and ", 4 entries\n" in after
        for path in made["share_files"]:
            assert "  %s: file, %d bytes, mode 0600" % (os.path.basename(path), os.path.getsize(path)) in after
        shares = [share_format.parse_share(Path(p).read_text()).text for p in made["share_files"]]
        for result in (planned, made):
            assert_nothing_of(result, secret, *shares)

        again = succeeded(run_module("shamir_split", args))
        assert again["changed"] is False and "diff" not in again

        out = tmp_path / "recovered.key"
        combine = dict(DIFF, state="combine", dest=str(out), share_files=made["share_files"][:2])
        planned = succeeded(run_module("shamir_split", combine, check_mode=True))
        assert diff_of(planned)[str(out)]["after"] == (
            "(check mode) would be the recovered secret, a file of 32 bytes, mode 0600\n"
        )
        assert not out.exists()
        combined = succeeded(run_module("shamir_split", combine))
        assert diff_of(combined)[str(out)]["after"].startswith("file, 32 bytes, mode 0600, owner ")
        assert out.read_bytes() == secret
        for result in (planned, combined):
            assert_nothing_of(result, secret, *shares)

        # check mode tells the truth about a loose mode: it would be tightened (changed), and the diff says so
        out.chmod(0o644)
        loose = succeeded(run_module("shamir_split", combine, check_mode=True))
        assert loose["changed"] is True
        item = diff_of(loose)[str(out)]
        assert "mode 0644" in item["before"] and item["after"] == "(check mode) would be the same file with mode 0600\n"
        assert out.stat().st_mode & 0o777 == 0o644
        tightened = succeeded(run_module("shamir_split", combine))
        assert tightened["changed"] is True and "mode 0600" in diff_of(tightened)[str(out)]["after"]
        assert "diff" not in succeeded(run_module("shamir_split", combine))


def test_sqlite_backup_diff(tmp_path):
    src = tmp_path / "app.db"
    with sqlite3.connect(src) as connection:
        connection.execute("CREATE TABLE t (x)")
        connection.execute("INSERT INTO t VALUES ('hello')")
    connection.close()
    dest = tmp_path / "copy.db"
    args = dict(DIFF, src=str(src), dest=str(dest), mode="0640")
    planned = succeeded(run_module("sqlite_backup", args, check_mode=True))
    item = diff_of(planned)[str(dest)]
    assert item["before"] == "absent\n"
    assert item["after"] == (
        "(check mode) would be a copy of the SQLite database %s (checked with PRAGMA integrity_check), mode 0640\n"
        % src
    )
    assert not dest.exists()
    made = succeeded(run_module("sqlite_backup", args))
    assert diff_of(made)[str(dest)]["after"].startswith("file, %d bytes, mode 0640, owner " % dest.stat().st_size)
    forced = succeeded(run_module("sqlite_backup", dict(args, force=True, mode="0600")))
    item = diff_of(forced)[str(dest)]
    assert "mode 0640" in item["before"] and "mode 0600" in item["after"]
    assert "diff" not in succeeded(
        run_module("sqlite_backup", dict(args, force=True, mode="0600", _ansible_diff=False))
    )


def test_restore_cutover_diff_plays_the_renames_in_check_mode_and_matches_the_real_run(tmp_path):
    live = tmp_path / "live" / "app.db"
    live.parent.mkdir()
    live.write_bytes(b"old" * 100)
    live.chmod(0o640)
    staged = tmp_path / "staging" / "app.db"
    staged.parent.mkdir()
    staged.write_bytes(b"restored" * 50)
    safety = tmp_path / "live" / "app.db.before"
    args = dict(DIFF, path=str(live), staged=str(staged), safety_copy=str(safety), allow_unguarded=True)

    planned = succeeded(run_module("restore_cutover", args, check_mode=True))
    items = diff_of(planned)
    assert set(items) == {str(live), str(staged), str(safety)}
    assert items[str(safety)]["before"] == "absent\n"
    assert items[str(safety)]["after"].startswith("(check mode) would be:\nfile, 300 bytes, mode 0640")
    assert items[str(staged)]["after"] == "(check mode) would be:\nabsent\n"
    assert items[str(live)]["after"].startswith("(check mode) would be:\nfile, 400 bytes, mode ")
    assert items[str(live)]["after"].endswith(", mode 0640\n")  # the live file's mode, given to the placed data
    assert live.read_bytes() == b"old" * 100 and not safety.exists()  # nothing moved

    done = succeeded(run_module("restore_cutover", args))
    items = diff_of(done)
    assert items[str(safety)]["after"].startswith("file, 300 bytes, mode 0640")
    assert items[str(staged)]["after"] == "absent\n"
    assert items[str(live)]["after"].startswith("file, 400 bytes, mode 0640")

    rollback = dict(DIFF, state="rollback", path=str(live), safety_copy=str(safety))
    back = succeeded(run_module("restore_cutover", rollback))
    items = diff_of(back)
    assert items[str(live)]["after"].startswith("file, 300 bytes") and items[str(safety)]["after"] == "absent\n"
    failed_copy = back["failed_copy"]
    assert items[failed_copy]["before"] == "absent\n" and items[failed_copy]["after"].startswith("file, 400 bytes")
    assert json.dumps(back["diff"]).count("restored") == 0


PLAY = """
- name: Every module that writes files, with --diff
  hosts: node
  gather_facts: false
  tasks:
    - name: Seal the secret
      nodekeep.backup.age_seal:
        src: "{{ work }}/secret.env"
        dest: "{{ work }}/secret.env.age"
        recipients: ["{{ recipient }}"]
    - name: Open a sealed copy made before
      nodekeep.backup.age_seal:
        state: opened
        src: "{{ work }}/before.age"
        dest: "{{ work }}/opened.env"
        identities: ["{{ identity }}"]
    - name: Split the master key
      nodekeep.backup.shamir_split:
        scheme: ssss
        threshold: 2
        custodians: [alice, bob, carol]
        src: "{{ work }}/master.key"
        dest: "{{ work }}/shares"
    - name: Copy the database
      nodekeep.backup.sqlite_backup:
        src: "{{ work }}/app.db"
        dest: "{{ work }}/copy.db"
    - name: Cut over to the restored database
      nodekeep.backup.restore_cutover:
        path: "{{ work }}/live.db"
        staged: "{{ work }}/staged.db"
        safety_copy: "{{ work }}/live.db.before"
        allow_unguarded: true
"""


@pytest.mark.slow
def test_a_playbook_with_check_and_diff_shows_the_changes_and_no_secret_even_at_vvv(tmp_path, age_key):
    """ansible-playbook --check --diff -vvv, then --diff -vvv: the diff of each module is printed, check mode
    writes nothing, and no secret (the sealed file's content, the age identity, the master key, a share) is
    anywhere in Ansible's output."""
    lab = PlaybookLab(tmp_path, require_playbook_tools("age"))
    work = tmp_path / "work"
    work.mkdir()
    secret = "API_TOKEN=" + os.urandom(20).hex()
    (work / "secret.env").write_text(secret + "\n")
    (work / "before.env").write_text(secret + "\n")
    succeeded(run_module("age_seal", {"src": str(work / "before.env"), "dest": str(work / "before.age"),
                                      "recipients": [age_key.recipient]}))  # fmt: skip
    (work / "before.env").unlink()
    master = os.urandom(32)
    (work / "master.key").write_bytes(master)
    with sqlite3.connect(work / "app.db") as connection:
        connection.execute("CREATE TABLE t (x)")
    connection.close()
    (work / "live.db").write_bytes(b"live" * 10)
    (work / "staged.db").write_bytes(b"staged" * 10)
    lab.write_inventory({"all": {"hosts": {"node": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable, "work": str(work),
        "recipient": age_key.recipient, "identity": age_key.identity}}}})  # fmt: skip
    playbook = tmp_path / "diff.yml"
    playbook.write_text(PLAY)
    listing = sorted(os.listdir(work))

    checked = lab.run(str(playbook), "--check", "--diff", "-vvv")
    assert sorted(os.listdir(work)) == listing  # check mode wrote nothing
    out = checked.stdout + checked.stderr
    for path in ("secret.env.age", "opened.env", "shares", "copy.db", "live.db.before"):
        assert "+++ after: %s/%s" % (work, path) in out
    assert out.count("(check mode) would be") >= 5
    assert "changed=5" in out

    done = lab.run(str(playbook), "--diff", "-vvv")
    real = done.stdout + done.stderr
    assert "changed=5" in real and "+++ after: %s/shares" % work in real
    shares = [share_format.parse_share(p.read_text()).text for p in (work / "shares").glob("share-*")]
    assert len(shares) == 3
    for text in (out, real):
        for needle in (secret, age_key.identity, master.hex(), hashlib.sha256(master).hexdigest(), *shares):
            assert needle not in text
        for share in shares:
            assert share.split("-")[-1] not in text
