"""After the verify role ran (converge, idempotence, side_effect): it wrote nothing to the
repository, left no plaintext behind, reported what it checked, and the copies it refused
really are damaged (sha256sum against the signed manifest)."""

import json

from nodekeep_molecule import REPOSITORY, ephemeral, epochs, manifest, run, sha256

NODE = "verify-node1"


def test_verifying_did_not_change_a_byte_of_the_repository(host):
    out = run(host, "cd %s && sha256sum --quiet -c /root/repository.sha256 && find . -type f | sort" % REPOSITORY)
    recorded = sorted(
        line.split(None, 1)[1] for line in host.file("/root/repository.sha256").content_string.splitlines()
    )
    assert out.split() == recorded  # no file added either


def test_deep_checks_left_no_plaintext_in_scratch_space(host):
    for repository in (REPOSITORY, "/var/backups/damaged"):
        scratch = "%s/.scratch" % repository
        if host.file(scratch).exists:
            assert host.file(scratch).mode == 0o700
            assert run(host, "find %s -type f" % scratch).strip() == "", "plaintext left in %s" % scratch


def test_the_report_of_the_deep_verify(host):
    (epoch,) = epochs(host, NODE)
    report = json.loads((ephemeral() / "results" / NODE / ("verify-%s-deep.json" % epoch)).read_text())
    assert (report["ok"], report["signature"], report["deep"], report["problems"]) == (True, "valid", True, [])
    (artifact,) = report["artifacts"]
    assert artifact["name"] == "ledger-db" and artifact["deep"] == "ok"
    assert artifact["checks"]["integrity"] == "ok"


def test_the_damaged_copy_really_differs_from_the_signed_manifest(host):
    (epoch,) = epochs(host, NODE)
    (artifact,) = manifest(host, NODE, epoch)["artifacts"]
    good = "%s/%s/%s/%s" % (REPOSITORY, NODE, epoch, artifact["file"])
    bad = "/var/backups/damaged/%s/%s/%s" % (NODE, epoch, artifact["file"])
    assert sha256(host, good) == artifact["sha256"]
    assert sha256(host, bad) != artifact["sha256"]
    assert host.file(bad).size == artifact["size"]  # same size: only the checksum tells
