"""nodekeep.backup.agent on agent-node1, checked with the node's and the controller's own tools."""

import re
import subprocess
import tempfile
from pathlib import Path

from nodekeep_molecule import PROJECT, REPOSITORY, VENV, controller_public_key, run

NODE = "agent-node1"
SIGNING_KEY = "/etc/nodekeep/signing_key"


def pins() -> dict[str, str]:
    text = (PROJECT / "requirements" / "node.txt").read_text()
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.MULTILINE))


def test_the_venv_imports_the_native_node_packages(host):
    out = run(host, "%s/bin/python -c 'import apsw, pyrage, rocksdict, zstandard, cryptography, boto3, shamir_mnemonic;"
                    " print(apsw.sqlite_lib_version())'" % VENV)  # fmt: skip
    assert re.match(r"^3\.\d+\.\d+$", out.strip())


def test_the_venv_holds_exactly_the_pinned_versions(host):
    want = pins()
    code = "import importlib.metadata as m, sys; [print(n, m.version(n)) for n in sys.argv[1:]]"
    out = run(host, "%s/bin/python -c %r %s" % (VENV, code, " ".join(want)))
    have = dict(line.split() for line in out.splitlines())
    assert have == want


def test_the_venv_sees_the_system_site_packages(host):
    run(host, "%s/bin/python -c 'import apt'" % VENV)  # Debian's python3-apt, from --system-site-packages


def test_the_wheelhouse_was_shipped_and_the_install_recorded(host):
    wheels = run(host, "ls /var/cache/nodekeep/wheelhouse").split()
    assert len([w for w in wheels if w.endswith(".whl")]) == len(pins())
    installed = host.file("%s/nodekeep-requirements.installed" % VENV).content_string
    assert installed == (PROJECT / "requirements" / "node.txt").read_text()


def test_the_repository_directory_is_private(host):
    repo = host.file(REPOSITORY)
    assert repo.is_directory and repo.user == "root" and repo.mode == 0o700


def test_the_signing_key_is_0600_in_a_0700_directory(host):
    key = host.file(SIGNING_KEY)
    assert key.is_file and key.user == "root" and key.mode == 0o600
    assert host.file("/etc/nodekeep").mode == 0o700
    assert key.content_string.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")


def test_the_controller_recorded_the_nodes_public_key(host):
    """ssh-keygen -y derives the public key from the node's private key: it is the recorded one."""
    recorded = controller_public_key(NODE)
    assert recorded.startswith("ssh-ed25519 ")
    with tempfile.TemporaryDirectory() as tmp:
        private = Path(tmp, "key")
        private.write_bytes(host.file(SIGNING_KEY).content)
        private.chmod(0o600)
        derived = subprocess.run(["ssh-keygen", "-y", "-f", str(private)], capture_output=True, text=True, check=True)
    assert derived.stdout.split()[:2] == recorded.split()[:2]
