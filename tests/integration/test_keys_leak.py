"""The three key ceremonies run as an operator runs them (ansible-playbook -vvv, localhost, connection local)
and leak nothing: no secret byte (node keys, mnemonic, master key, shares; raw, hex and base64) appears in
Ansible's output or log, or in any file under the work directory other than the share files and sealed
artifacts. Also: the key comes back byte for byte, and a host outside production is refused.

Layout: ``node/`` holds the secrets the ceremonies start from and the restored key (where secrets belong);
``work/`` holds everything the ceremonies and Ansible write (inventory, repository, ceremony directory,
Ansible's temporary directories and log) and is scanned.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core import signing
from ansible_collections.nodekeep.backup.plugins.module_utils.keys import shamir
from ansible_collections.nodekeep.backup.plugins.module_utils.keys import shares as _shares_mod

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
CUSTODIANS = ["alice", "bob", "carol", "dave", "erin"]
MNEMONIC = b"legal winner thank year wave sausage worth useful legal winner thank yellow\n"
BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def bech32_payload(text: str) -> bytes:
    """The bytes inside a bech32 string (an age identity's 32-byte X25519 scalar)."""
    data = text.lower().rsplit("1", 1)[1][:-6]
    bits, value, out = 0, 0, bytearray()
    for char in data:
        value = (value << 5) | BECH32.index(char)
        bits += 5
        if bits >= 8:
            bits -= 8
            out.append((value >> bits) & 0xFF)
    return bytes(out)


def forms(secret: bytes) -> set[bytes]:
    """How a secret could show up: raw, hex (both cases), base64 (padded or not, standard or url-safe)."""
    found = {secret, secret.hex().encode(), secret.hex().upper().encode()}
    for encoded in (base64.b64encode(secret), base64.urlsafe_b64encode(secret)):
        found.add(encoded)
        found.add(encoded.rstrip(b"="))
    if all(32 <= b < 127 or b in b"\n" for b in secret):
        found.add(secret.strip())
        found.add(json.dumps(secret.decode())[1:-1].encode())  # as a JSON string (newlines escaped)
    return {form for form in found if len(form) >= 16}


@dataclass
class Ceremonies:
    root: Path
    node: Path
    work: Path
    runs: dict = field(default_factory=dict)
    secrets: dict = field(default_factory=dict)
    shares: list = field(default_factory=list)
    master_public: str = ""
    fingerprint: str = ""

    def output(self) -> bytes:
        return b"\n".join(run.stdout + run.stderr for run in self.runs.values())


def playbook(c: Ceremonies, name: str, *extra: str, expect: int = 0) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(REPO / "build" / "collections"),
        ANSIBLE_LOCAL_TEMP=str(c.work / "ansible-local"),
        ANSIBLE_REMOTE_TEMP=str(c.work / "ansible-remote"),
        ANSIBLE_LOG_PATH=str(c.work / "ansible.log"),
        ANSIBLE_HOME=str(c.work / "ansible-home"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_STDOUT_CALLBACK="default",
        PATH=str(VENV_BIN) + os.pathsep + env.get("PATH", ""),
    )
    args = [
        str(VENV_BIN / "ansible-playbook"),
        "-vvv",
        "-i",
        str(c.work / "hosts.yml"),
        "-e",
        "@" + str(c.work / "vars.yml"),
    ]
    for item in extra:
        args += ["-e", item]
    args.append(str(REPO / "playbooks" / name))
    began = time.monotonic()
    proc = subprocess.run(args, cwd=c.work, env=env, capture_output=True, timeout=240, check=False)
    proc.seconds = time.monotonic() - began  # type: ignore[attr-defined]
    assert proc.returncode == expect, (name, proc.stdout.decode()[-4000:], proc.stderr.decode()[-2000:])
    return proc


def _ssh_key(path: Path) -> tuple[bytes, str]:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "node", "-f", str(path)], check=True)
    listed = subprocess.run(["ssh-keygen", "-lf", str(path) + ".pub"], capture_output=True, text=True, check=True)
    return path.read_bytes(), listed.stdout.split()[1]


@pytest.fixture(scope="module")
def ceremonies(tmp_path_factory) -> Ceremonies:
    root = tmp_path_factory.mktemp("keys-ceremonies")
    c = Ceremonies(root, root / "node", root / "work")
    (c.node / "keys").mkdir(parents=True)
    c.work.mkdir()

    # What the node holds (secret assets) ------------------------------------------------
    identity_pem, c.fingerprint = _ssh_key(c.node / "keys" / "node_identity")
    (c.node / "mnemonic.txt").write_bytes(MNEMONIC)
    os.chmod(c.node / "mnemonic.txt", 0o600)
    from cryptography.hazmat.primitives import serialization

    raw_key = serialization.load_ssh_private_key(identity_pem, None).private_bytes_raw()
    c.secrets.update(
        {"node identity key (PEM)": identity_pem, "node identity key (raw)": raw_key, "mnemonic": MNEMONIC}
    )

    pem = signing.generate_private_key_pem()
    fd = os.open(c.work / "signing_key", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, pem)
    os.close(fd)
    c.secrets["node signing key"] = pem
    custodian = subprocess.run(["age-keygen"], capture_output=True, text=True, check=True)
    custodian_public = custodian.stderr.split("Public key:")[1].strip()

    python = sys.executable
    (c.work / "hosts.yml").write_text(
        "all:\n  children:\n    nodekeep_nodes:\n      hosts:\n        localhost:\n"
        "          ansible_connection: local\n          ansible_python_interpreter: %s\n" % python
    )
    variables = {
        "nodekeep_venv": str(VENV_BIN.parent),
        "nodekeep_repository_path": str(c.work / "repo"),
        "nodekeep_signing_key_path": str(c.work / "signing_key"),
        "nodekeep_assets": [
            {"name": "node-identity", "type": "secret", "path": str(c.node / "keys" / "node_identity")},
            {"name": "wallet-mnemonic", "type": "secret", "path": str(c.node / "mnemonic.txt")},
            {"name": "node-db", "type": "sqlite", "path": "/var/lib/app/app.db"},
        ],
        "nodekeep_keys_ceremony_dir": str(c.work / "ceremony"),
        "nodekeep_keys_custodians": CUSTODIANS,
        "nodekeep_keys_threshold": 3,
        "nodekeep_keys_payloads": [{"name": "wallet-mnemonic", "path": str(c.node / "mnemonic.txt")}],
        "nodekeep_keys_tmp_parent": str(c.work),
        "nodekeep_results_dir": str(c.work / "results"),
    }
    (c.work / "vars.yml").write_text(json.dumps(variables))

    # 1. split (offline host = localhost) -------------------------------------------------
    c.runs["split"] = playbook(c, "keys_split.yml")
    checksums = json.loads((c.work / "ceremony" / "checksums.json").read_text())
    c.master_public = checksums["master"]["age_public_key"]
    share_files = sorted((c.work / "ceremony" / "shares").iterdir())
    c.shares = [_shares_mod.parse_share(path.read_text(), str(path)) for path in share_files]
    master = shamir.combine_shares(c.shares[:3]).secret
    c.secrets["master key"] = master
    c.secrets["master key (raw X25519)"] = bech32_payload(master.decode())
    import shamir_mnemonic

    for share in c.shares:
        c.secrets["share %d (words)" % share.index] = share.text.encode()
        c.secrets["share %d (value)" % share.index] = shamir_mnemonic.Share.from_mnemonic(share.text).value

    # 2. seal the node's secrets to a custodian and the master key ---------------------------
    c.runs["seal"] = playbook(
        c, "keys_seal.yml", json.dumps({"nodekeep_keys_recipients": [custodian_public, c.master_public]})
    )
    keys_node = c.work / "repo" / "localhost.keys"
    epoch = next(p.name for p in keys_node.iterdir() if p.is_dir())

    # 3. recover the node identity key from the keys epoch with three share files -----------
    recover = {
        "nodekeep_keys_share_files": [str(p) for p in share_files[1:4]],
        "nodekeep_keys_split_record": str(c.work / "ceremony" / "record.json"),
        "nodekeep_keys_sealed_file": str(keys_node / epoch / "node-identity.zst.age"),
        "nodekeep_keys_checksums_file": str(keys_node / "last-keys-seal.json"),
        "nodekeep_keys_item": "node-identity",
        "nodekeep_keys_restore_path": str(c.node / "restored" / "node_identity"),
        "nodekeep_keys_allow_nonproduction": True,
    }
    c.runs["recover"] = playbook(c, "keys_recover.yml", json.dumps(recover))

    # 4. recover the split's sealed mnemonic from shares typed from paper (a vars file kept with the node)
    typed = c.node / "typed-shares.json"
    typed.write_text(json.dumps({"nodekeep_keys_shares": [c.shares[0].text, c.shares[4].text]}))
    recover_typed = {
        "nodekeep_keys_share_files": [str(share_files[2])],
        "nodekeep_keys_split_record": str(c.work / "ceremony" / "record.json"),
        "nodekeep_keys_sealed_file": str(c.work / "ceremony" / "sealed" / "wallet-mnemonic.age"),
        "nodekeep_keys_checksums_file": str(c.work / "ceremony" / "checksums.json"),
        "nodekeep_keys_item": "wallet-mnemonic",
        "nodekeep_keys_restore_path": str(c.node / "restored" / "mnemonic.txt"),
        "nodekeep_keys_allow_nonproduction": True,
    }
    c.runs["recover typed"] = playbook(c, "keys_recover.yml", json.dumps(recover_typed), "@" + str(typed))

    # 5. the operator gives the plain SHA-256 of the mnemonic (nodekeep_keys_expected_sha256), then runs it again
    # (the key is there: its checksum is read). Neither run may echo an unkeyed digest of the key (-vvv).
    recover_given = {
        "nodekeep_keys_share_files": [str(p) for p in share_files[:3]],
        "nodekeep_keys_sealed_file": str(c.work / "ceremony" / "sealed" / "wallet-mnemonic.age"),
        "nodekeep_keys_expected_sha256": hashlib.sha256(MNEMONIC).hexdigest(),
        "nodekeep_keys_restore_path": str(c.node / "restored" / "mnemonic-given.txt"),
        "nodekeep_keys_allow_nonproduction": True,
    }
    c.runs["recover given checksum"] = playbook(c, "keys_recover.yml", json.dumps(recover_given))
    c.runs["recover given checksum again"] = playbook(c, "keys_recover.yml", json.dumps(recover_given))
    # an unkeyed digest of a secret gives it away as surely as the secret when it can be guessed (a PIN, a known
    # key): looked for like the secrets themselves
    for what in ("node identity key (PEM)", "mnemonic"):
        for name in ("sha256", "sha512", "sha1", "md5"):
            c.secrets["%s, %s" % (what, name.upper())] = hashlib.new(name, c.secrets[what]).digest()
    return c


def _hits(data: bytes, secrets: dict) -> list[str]:
    found = []
    for what, secret in secrets.items():
        if what.endswith("(words)"):
            if _words_found(data, secret):
                found.append(what)
            continue
        for form in forms(secret):
            if form in data:
                found.append(what)
                break
    return found


def _words_found(data: bytes, mnemonic: bytes) -> bool:
    """Any 6 consecutive value words of a SLIP-39 share, however they are spaced, numbered or quoted.

    The first 4 words (split identifier, share index: public, also in the record) and the last 3 (checksum)
    are not looked for; 6 words are 60 random bits.
    """
    text = b" " + b" ".join(re.findall(rb"[a-z]+", data.lower())) + b" "
    words = mnemonic.split()[4:-3]
    return any(
        b" " + b" ".join(words[start : start + 6]) + b" " in text for start in range(0, max(1, len(words) - 5), 3)
    )


def test_the_key_and_the_mnemonic_come_back_byte_for_byte(ceremonies):
    c = ceremonies
    restored = c.node / "restored" / "node_identity"
    assert restored.read_bytes() == c.secrets["node identity key (PEM)"]
    assert (restored.stat().st_mode & 0o777) == 0o600
    assert (c.node / "restored" / "mnemonic.txt").read_bytes() == MNEMONIC
    assert (c.node / "restored" / "mnemonic-given.txt").read_bytes() == MNEMONIC
    assert b"already held this key" in c.runs["recover given checksum again"].stdout
    recover_out = c.runs["recover"].stdout.decode()
    assert c.fingerprint in recover_out and "checksum matches the record" in recover_out
    assert c.master_public in recover_out


def test_no_secret_appears_in_ansible_output(ceremonies):
    output = ceremonies.output()
    assert b"<localhost> EXEC" in output  # -vvv really was on
    assert _hits(output, ceremonies.secrets) == []


def test_no_secret_appears_in_any_file_but_shares_and_sealed_artifacts(ceremonies):
    c = ceremonies
    scanned, leaks = [], []
    for directory, _dirs, files in os.walk(c.work):
        for name in files:
            path = Path(directory) / name
            relative = path.relative_to(c.work)
            if relative.parts[:2] == ("ceremony", "shares") and name != "record.json":
                continue  # a custodian's share: it holds exactly one share, by design
            if name.endswith(".age"):
                continue  # sealed artifacts (age-encrypted)
            if name == "signing_key":
                continue  # the node's signing key itself
            scanned.append(str(relative))
            leaks += ["%s: %s" % (relative, what) for what in _hits(path.read_bytes(), c.secrets)]
    assert "ansible.log" in scanned and "ceremony/checksums.json" in scanned and "ceremony/record.json" in scanned
    assert any(s.endswith("manifest.json") for s in scanned)
    assert leaks == []


def test_each_share_file_holds_only_its_own_share(ceremonies):
    c = ceremonies
    for share, path in zip(c.shares, sorted((c.work / "ceremony" / "shares").iterdir())):
        others = {k: v for k, v in c.secrets.items() if not k.startswith("share %d " % share.index)}
        assert _hits(path.read_bytes(), others) == []
        assert _hits(path.read_bytes(), c.secrets) == ["share %d (words)" % share.index]  # the detector works
        assert (path.stat().st_mode & 0o777) == 0o600


def test_the_detector_finds_each_form_of_a_secret(ceremonies):
    c = ceremonies
    restored = (c.node / "restored" / "node_identity").read_bytes()
    assert "node identity key (PEM)" in _hits(restored, c.secrets)
    master = c.secrets["master key (raw X25519)"]
    for form in (master.hex(), base64.b64encode(master).decode(), base64.b64encode(master).decode().rstrip("=")):
        assert _hits(b"noise " + form.encode() + b" noise", c.secrets) == ["master key (raw X25519)"]
    assert _hits(
        b'{"msg": "legal winner thank year wave sausage worth useful legal winner thank yellow\\n"}', c.secrets
    )


def test_the_master_key_working_directory_is_removed(ceremonies):
    assert [p.name for p in ceremonies.work.iterdir() if p.name.startswith("nodekeep-recover-")] == []


def test_recovery_outside_production_is_refused(ceremonies):
    c = ceremonies
    target = c.node / "refused" / "key"
    recover = {
        "nodekeep_keys_share_files": [str(p) for p in sorted((c.work / "ceremony" / "shares").iterdir())[:3]],
        "nodekeep_keys_sealed_file": str(c.work / "ceremony" / "sealed" / "wallet-mnemonic.age"),
        "nodekeep_keys_expected_sha256": "0" * 64,
        "nodekeep_keys_restore_path": str(target),
    }
    proc = playbook(c, "keys_recover.yml", json.dumps(recover), expect=2)
    assert b"not in a production group (mainnet)" in proc.stdout
    assert b"nodekeep_keys_allow_nonproduction=true" in proc.stdout
    assert not target.parent.exists()
