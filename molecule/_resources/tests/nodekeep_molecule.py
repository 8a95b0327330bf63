"""Helpers shared by the scenarios' testinfra tests (imported through each tests/conftest.py).

Every check uses the tools an operator would: `age` and `zstd` to open an artifact,
`sqlite3` for `PRAGMA integrity_check` and row comparisons, `ssh-keygen -Y verify`
(on the controller) for manifest signatures, `sha256sum`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[3]
EPOCH_RE = re.compile(r"^\d{8}T\d{6}Z$")
REPOSITORY = "/var/backups/nodekeep"
IDENTITY = "/root/nodekeep-test.age"  # the test fleet's age identity on the hosts that decrypt
VENV = "/opt/nodekeep/venv"
NAMESPACE = "nodekeep-manifest"


def ephemeral() -> Path:
    return Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])


def controller_public_key(node: str) -> str:
    """The node's public key as the agent role recorded it on the controller."""
    return (ephemeral() / "keys" / ("%s.pub" % node)).read_text().strip()


def run(host, command: str) -> str:
    """Run a shell command on the host; fail the test with its output unless it exits 0."""
    result = host.run(command)
    assert result.rc == 0, "%s\nrc %s\nstdout: %s\nstderr: %s" % (command, result.rc, result.stdout, result.stderr)
    return result.stdout


def q(value: str) -> str:
    return shlex.quote(str(value))


def epochs(host, node: str, repository: str = REPOSITORY) -> list[str]:
    """Epoch directories of a node (complete or not), oldest first."""
    listing = host.run("ls -1 %s" % q("%s/%s" % (repository, node)))
    return sorted(name for name in listing.stdout.split() if EPOCH_RE.match(name))


def manifest(host, node: str, epoch: str, repository: str = REPOSITORY) -> dict:
    return json.loads(host.file("%s/%s/%s/manifest.json" % (repository, node, epoch)).content_string)


def ssh_keygen_verify(host, node: str, epoch: str, public_key: str, repository: str = REPOSITORY) -> str:
    """`ssh-keygen -Y verify` of the epoch's manifest signature, on the controller, with the given key."""
    base = "%s/%s/%s/" % (repository, node, epoch)
    data = host.file(base + "manifest.json").content
    signature = host.file(base + "manifest.json.sig").content
    with tempfile.TemporaryDirectory() as tmp:
        allowed = Path(tmp, "allowed_signers")
        allowed.write_text("%s %s\n" % (node, " ".join(public_key.split()[:2])))
        Path(tmp, "manifest.json.sig").write_bytes(signature)
        proc = subprocess.run(
            ["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", node, "-n", NAMESPACE,
             "-s", str(Path(tmp, "manifest.json.sig"))],
            input=data, capture_output=True, check=False,
        )  # fmt: skip
    return proc.stdout.decode() + proc.stderr.decode() if proc.returncode == 0 else "FAILED: %s" % proc.stderr.decode()


def open_artifact(host, artifact: str, out: str, identity: str = IDENTITY) -> None:
    """`age -d -i IDENTITY ARTIFACT | zstd -d > OUT` on the host: no nodekeep code involved."""
    script = "set -o pipefail; rm -f %s; age -d -i %s %s | zstd -d -q -o %s" % (
        q(out),
        q(identity),
        q(artifact),
        q(out),
    )
    run(host, "bash -c %s" % q(script))


def sqlite(host, db: str, sql: str, user: str | None = None) -> str:
    """The sqlite3 CLI on the host. A live database is read as its service's user (``user``): a root
    reader of a WAL database could create root-owned -wal/-shm files the service cannot open. Any
    other file (a copy, a restored or safety copy) is opened immutable: nothing is written beside it."""
    if user:
        return run(
            host, "runuser -u %s -- sqlite3 -batch -cmd '.timeout 10000' %s %s" % (q(user), q(db), q(sql))
        ).strip()
    return run(host, "sqlite3 -batch %s %s" % (q("file:%s?immutable=1" % db), q(sql))).strip()


def integrity(host, db: str) -> str:
    return sqlite(host, db, "PRAGMA integrity_check")


def sha256(host, path: str) -> str:
    return run(host, "sha256sum %s" % q(path)).split()[0]


def files_with_digests(host, directory: str) -> dict[str, tuple[str, int]]:
    """name -> (sha256, mode) of every file in a directory, in one command."""
    out = run(host, "cd %s && for f in * .[!.]*; do [ -f \"$f\" ] && stat -c '%%a %%n' \"$f\" && sha256sum \"$f\"; done; true"
              % q(directory))  # fmt: skip
    lines = out.splitlines()
    found = {}
    for stat_line, sum_line in zip(lines[::2], lines[1::2]):
        mode, name = stat_line.split(" ", 1)
        found[name] = (sum_line.split()[0], int(mode, 8))
    return found


def chain_rows(host, db: str, user: str | None = None, where: str = "1") -> dict[int, tuple]:
    """seq -> (height, kind, hash) of the test node's chain table (scripts/demo_writer.py)."""
    out = sqlite(host, db, "SELECT seq, height, kind, hash FROM chain WHERE %s ORDER BY seq" % where, user)
    rows = {}
    for line in out.splitlines():
        seq, height, kind, digest = line.split("|")
        rows[int(seq)] = (int(height), kind, digest)
    return rows


def assert_written_around(host, db: str, started: str, finished: str, user: str | None = None) -> None:
    """The service committed rows within one second before the backup started and within one second
    after it finished: it was writing all along, so the backup ran under live writes. (Rows strictly
    inside the window are likely but not certain for a backup of a fraction of a second.)"""
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ"
    start, end = (datetime.strptime(t, fmt) for t in (started, finished))
    second = timedelta(seconds=1)
    for low, high, what in ((start - second, start, "before it started"), (end, end + second, "after it finished")):
        count = sqlite(
            host, db, "SELECT count(*) FROM chain WHERE created_at >= '%s' AND created_at <= '%s'"
            % (low.strftime(fmt), high.strftime(fmt)), user,
        )  # fmt: skip
        assert int(count) > 0, "the service wrote nothing in the second %s the backup (%s .. %s)" % (
            what,
            started,
            finished,
        )


def assert_consistent_copy(copy: dict[int, tuple], live: dict[int, tuple]) -> None:
    """A snapshot of the append-only chain: a gap-free prefix of the live rows, no torn transaction."""
    assert copy, "the copy holds no rows"
    seqs = sorted(copy)
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), "the copy has gaps in seq"
    mismatched = [seq for seq, row in copy.items() if live.get(seq) != row]
    assert not mismatched, "%d rows differ from the live database (first seq %d)" % (len(mismatched), mismatched[0])
    per_height: dict[int, int] = {}
    for height, _kind, _digest in copy.values():
        per_height[height] = per_height.get(height, 0) + 1
    assert set(per_height.values()) == {2}, "a transaction (header + receipt of one height) was torn"
