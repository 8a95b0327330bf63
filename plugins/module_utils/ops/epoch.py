# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The three flows on one epoch: backup, verify, restore.

Every module and role goes through these functions, so an asset type, a
repository backend or a check added here serves the whole collection.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import contextlib
import fcntl
import io
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.assets.base import RunContext
from ansible_collections.nodekeep.backup.plugins.module_utils.assets.registry import asset_type, normalize_assets
from ansible_collections.nodekeep.backup.plugins.module_utils.core import progress, safefs, signing
from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import utc_now_iso
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    IntegrityError,
    NodekeepError,
    RepositoryError,
    RestoreError,
    describe_os_error,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import private_temp_dir, stream_digest
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    Artifact,
    Manifest,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.seal import seal, unseal
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot import volumes as _snapshot
from ansible_collections.nodekeep.backup.plugins.module_utils.storage import proofs
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.epochs import (
    load_manifest,
    next_sequence,
    record_sequence,
    resolve_epoch,
    sequence_lock,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import Repository

RUN_PREFIX = ".nodekeep-run-"


def _scratch_root(scratch_dir: str | None, repository: Repository) -> str:
    if scratch_dir:
        try:
            os.makedirs(scratch_dir, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise describe_os_error(exc, "creating the scratch directory", scratch_dir)
        if not os.access(scratch_dir, os.W_OK):
            raise RepositoryError(
                "the scratch directory %s is not writable (a read-only file system or its permissions)" % scratch_dir,
                "give scratch_dir a writable directory, or leave it unset: a repository this run may only read then "
                "gets its scratch space in this user's private temporary directory (TMPDIR/nodekeep-scratch-UID)",
            )
        return scratch_dir
    scratch = getattr(repository, "scratch_dir", None)
    if scratch is not None:
        # A repository this run may only read (mounted read-only, another owner's) gets its scratch
        # space in this user's private temporary directory instead (a deep verify only reads it).
        root = getattr(repository, "root", "")
        if os.path.isdir(root) and not os.access(root, os.W_OK):
            return private_temp_dir()
        path = scratch()
        return path if os.access(path, os.W_OK) else private_temp_dir()
    return private_temp_dir()


def _sweep_stale_runs(root: str) -> None:
    """Remove scratch space of runs that died (their lock is free): plaintext must not linger.

    The lock is held until the directory is gone, so a run that is just creating
    its directory (see ``_locked_run_dir``) waits, then sees its lock was removed and
    starts over instead of working in a directory being deleted.
    """
    for entry in os.scandir(root):
        if not entry.name.startswith(RUN_PREFIX) or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            fd = os.open(os.path.join(entry.path, ".lock"), os.O_RDWR | safefs.O_NOFOLLOW | safefs.O_CLOEXEC)
        except OSError:
            continue  # not one of ours (or not ours to judge): never removed
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # a live run holds it
        try:
            shutil.rmtree(entry.path, ignore_errors=True)
        finally:
            os.close(fd)


def _locked_run_dir(root: str) -> tuple[str, int]:
    """A new run directory under ``root`` and the descriptor of its held lock.

    Between ``mkdtemp`` and ``flock`` another run's sweep may judge the directory
    stale and remove it: the lock taken is then no longer the one at the path, and
    a new directory is made (two of many parallel runs failed on this before).
    """
    while True:
        path = tempfile.mkdtemp(prefix=RUN_PREFIX, dir=root)
        lock = os.path.join(path, ".lock")
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | safefs.O_NOFOLLOW | safefs.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            continue  # swept before the lock file existed
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits while a sweep that took it removes the directory
        try:
            if os.stat(lock, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                return path, fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def scratch_space(scratch_dir: str | None, repository: Repository) -> Iterator[str]:
    """A private 0700 directory for this run's transient plaintext, removed at the end.

    The directory is locked while the run lives; every run first removes the
    directories of runs that were killed, so no plaintext copy survives a crash
    for longer than the next run.
    """
    root = _scratch_root(scratch_dir, repository)
    _sweep_stale_runs(root)
    path, fd = _locked_run_dir(root)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


# --------------------------------------------------------------------------
# backup
# --------------------------------------------------------------------------


def _path_size(path: Any) -> int | None:
    """The size of a regular file at ``path`` (a database to capture), None for anything else."""
    try:
        info = os.stat(path, follow_symlinks=False) if isinstance(path, str) else None
    except OSError:
        return None
    return info.st_size if info is not None and stat.S_ISREG(info.st_mode) else None


def _stream_size(stream: Any) -> int | None:
    """Bytes left in a captured stream when it is a regular file (a tar of a tree: unknown, None)."""
    try:
        info = os.fstat(stream.fileno())
        return max(info.st_size - stream.tell(), 0) if stat.S_ISREG(info.st_mode) else None
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


def _capture_and_seal(
    repository: Repository,
    node: str,
    epoch: str,
    asset: dict[str, Any],
    recipients: list,
    scratch: str,
    level: int,
    view: dict[str, Any] | None = None,
    full: bool = False,
    index: int = 0,
) -> Artifact:
    kind = asset_type(asset["type"])
    file_name = kind.artifact_file(asset)
    began = time.monotonic()
    context = RunContext(repository, node, epoch, scratch, recipients=recipients, level=level, full=full)
    # An asset of a consistency group is read at the same relative path inside the group's snapshot.
    source = dict(asset, path=view["path"]) if view else asset
    tracker = progress.current()
    with contextlib.ExitStack() as stack:
        # Live progress (docs/progress.md): the capture (a SQLite copy, a snapshot), then the seal pass.
        with tracker.step(asset["name"], "capture", _path_size(source.get("path")), index):
            captured = stack.enter_context(kind.capture(source, scratch, context))
        sink = stack.enter_context(repository.open_write(node, epoch, file_name))
        with tracker.step(asset["name"], "seal", _stream_size(captured.stream), index):
            result = seal(
                captured.stream, sink, recipients, level=level, sink_name=repository.describe(node, epoch, file_name)
            )
            # Checks that ran beside the seal (SQLite integrity) decide before the artifact is committed.
            facts = captured.finish()
    facts.update(kind.content_facts(asset, result.content.sha256, context))
    facts["path"] = asset["path"]
    if view:
        facts["snapshot"] = view["snapshot"]
    facts["seconds"] = round(time.monotonic() - began, 3)
    for key in ("service", "health_command"):
        if asset.get(key):
            facts[key] = asset[key]
    return Artifact(
        name=asset["name"],
        asset_type=kind.name,
        file=file_name,
        format=kind.artifact_format_for(asset),
        size=result.sealed.size,
        sha256=result.sealed.sha256,
        content_size=result.content.size,
        content_sha256=result.content.sha256 if kind.keeps_content_sha256(facts) else None,
        compressed=result.compressed,
        source=facts,
    )


def backup_epoch(
    repository: Repository,
    node: str,
    assets: list[dict[str, Any]],
    recipients: list,
    recipient_strings: Iterable[str],
    signing_key,
    scratch_dir: str | None = None,
    level: int = 3,
    labels: dict[str, Any] | None = None,
    full: bool = False,
    sequence_state: str | None = None,
    now=None,
) -> Manifest:
    """Capture and seal every asset into a new epoch, then write the signed manifest last.

    ``full``: incremental assets (pieces) store a full epoch, reusing nothing from earlier epochs' maps.
    ``sequence_state``: the node's record of the last epoch it signed (``sequence_state_path`` of the
    signing key); the manifest's signed ``sequence`` links to it, so deleting the newest epochs shows in
    the repository once this epoch exists. Without it the newest signed epoch of the repository is linked.
    ``now``: the clock the epoch is named by (a datetime; default the current second, the next free one on a clash).
    """
    assets = normalize_assets(assets)
    if not recipients:
        raise NodekeepError("no age recipient was given", "set nodekeep_age_recipients; nothing was written")
    epoch = repository.new_epoch(node, now)
    started = utc_now_iso()
    progress.current().expect(len(assets))
    try:
        # One atomic snapshot per distinct `snapshot:` of the assets, removed after (also on failure).
        with scratch_space(scratch_dir, repository) as scratch:  # noqa: SIM117 - Python 3.9 on nodes
            with _snapshot.consistency_snapshots(assets, epoch, scratch) as views:
                artifacts = [
                    _capture_and_seal(
                        repository, node, epoch, item, recipients, scratch, level, views.get(item["name"]), full, number
                    )
                    for number, item in enumerate(assets, 1)
                ]
        manifest = Manifest(
            node=node,
            epoch=epoch,
            started=started,
            finished=utc_now_iso(),
            recipients=list(recipient_strings),
            artifacts=artifacts,
            labels=dict(labels or {}),
        )
        # One backup at a time picks a number, signs and records it (the capture above ran in parallel).
        with sequence_lock(sequence_state):
            manifest.sequence = next_sequence(repository, node, signing.public_line_of(signing_key), sequence_state)
            data = manifest.to_bytes()
            signature = signing.sign(data, signing_key)
            repository.put_bytes(node, epoch, MANIFEST_NAME, data)
            # The signature is the commit point: written last, it makes the epoch exist.
            repository.put_bytes(node, epoch, SIGNATURE_NAME, signature.encode("ascii"))
            record_sequence(repository, node, sequence_state, manifest, data)
    except BaseException:
        with contextlib.suppress(Exception):
            if not repository.is_complete(node, epoch):
                repository.remove_epoch(node, epoch)
        raise
    return manifest


def _compare(artifact: Artifact, sealed_size: int, sealed_sha: str, content=None) -> list[str]:
    problems = []
    if sealed_size != artifact.size:
        problems.append("size is %d bytes, the manifest says %d" % (sealed_size, artifact.size))
    if sealed_sha != artifact.sha256:
        problems.append("SHA-256 does not match the manifest (the artifact was modified or damaged)")
    if content is not None and (
        content.size != artifact.content_size
        or (artifact.content_sha256 is not None and content.sha256 != artifact.content_sha256)
    ):
        # Backed-up data has no plaintext hash in the manifest: the sealed SHA-256 above pins the bytes, age
        # authenticates them.
        problems.append("the decrypted content does not match the manifest's content checksum")
    return problems


def verify_epoch(
    repository: Repository,
    node: str,
    epoch: str,
    public_key: str,
    deep: bool = False,
    identities: list | None = None,
    scratch_dir: str | None = None,
    artifacts: Iterable[str] | None = None,
    check: str = "integrity",
    proof_key=None,
) -> dict[str, Any]:
    """Check the signature, every (or the named) artifact's checksum and, when deep, its content.

    ``proof_key`` (the node's signing key, deep only): where the full ``PRAGMA integrity_check`` of an
    artifact's rebuilt image ran here (its capture ran only ``quick_check``), record a signed proof beside
    the manifest (storage/proofs.py) that a later restore trusts instead of running the check again."""
    if proof_key is not None:
        _check_proof_key(proof_key, public_key, deep, check)
    epoch = resolve_epoch(repository, node, epoch)
    report: dict[str, Any] = {"node": node, "epoch": epoch, "signature": "unchecked", "artifacts": [], "problems": []}
    try:
        manifest = load_manifest(repository, node, epoch, public_key)
    except NodekeepError as exc:
        report["signature"] = "invalid"
        report["problems"].append(exc.message)
        report["ok"] = False
        return report
    report["signature"] = "valid"
    report["finished"] = manifest.finished
    wanted = set(artifacts) if artifacts else None
    progress.current().expect(len(manifest.artifacts))
    present = repository.files(node, epoch)
    scratch_context = scratch_space(scratch_dir, repository) if deep else contextlib.nullcontext("")
    with scratch_context as scratch:
        for number, artifact in enumerate(manifest.artifacts, 1):
            if wanted is not None and artifact.name not in wanted:
                continue
            phase = "deep verify" if deep else "verify"
            with progress.current().step(artifact.name, phase, _verify_total(artifact, deep), number):
                entry = _verify_artifact(
                    repository, node, epoch, artifact, present, deep, identities or [], scratch, check, proof_key
                )
            if not entry["ok"]:
                report["problems"].append("%s: %s" % (artifact.name, entry["error"]))
            report["artifacts"].append(entry)
    listed = {a.file for a in manifest.artifacts} | {MANIFEST_NAME, SIGNATURE_NAME}
    listed.update(proofs.proof_name(a) for a in manifest.artifacts)
    for artifact in manifest.artifacts:
        with contextlib.suppress(NodekeepError):
            listed.update(item["file"] for item in asset_type(artifact.asset_type).extra_files(artifact))
    extra = sorted(set(present) - listed)
    if extra:
        report["unlisted_files"] = extra
    report["ok"] = not report["problems"]
    _raise_warnings(report)
    return report


def _check_proof_key(proof_key, public_key: str, deep: bool, check: str) -> None:
    """A proof is recorded only by a deep verify that runs the full check, with the node's own key."""
    if not deep or check != "integrity":
        raise IntegrityError(
            "an integrity proof records a full PRAGMA integrity_check of a rebuilt image: it needs deep and "
            "check integrity (deep=%s, check=%s)" % (deep, check),
            "set deep: true and check: integrity, or leave signing_key unset",
        )
    try:
        same = signing.public_key_blob(signing.parse_public_key(signing.public_line_of(proof_key))) == (
            signing.public_key_blob(signing.parse_public_key(public_key))
        )
    except NodekeepError:
        same = False
    if not same:
        raise IntegrityError(
            "the signing key for integrity proofs is not the node's key (public_key): a restore would not "
            "trust its proofs",
            "set signing_key to the node's signing key (nodekeep_signing_key_path), the one public_key belongs to",
        )


def _verify_total(artifact: Artifact, deep: bool) -> int:
    """What a verify of ``artifact`` moves: its plaintext when deep (decrypted), else its sealed bytes."""
    return artifact.content_size if deep else artifact.size


def _verify_artifact(
    repository, node, epoch, artifact: Artifact, present, deep, identities, scratch, check, proof_key=None
):
    entry: dict[str, Any] = {"name": artifact.name, "asset_type": artifact.asset_type, "file": artifact.file}
    entry["checked_bytes"] = _verify_total(artifact, deep)
    began = time.monotonic()
    try:
        if artifact.file not in present:
            raise IntegrityError("%s is missing from the epoch" % artifact.file)
        if deep:
            entry.update(_deep_check(repository, node, epoch, artifact, identities, scratch, check))
            checks = entry["checks"]
            if proof_key is not None and _ran_full_check(artifact, checks, check):
                entry["proof"] = _record_proof(repository, node, epoch, artifact, checks, proof_key)
        else:
            # The cheap checksum pass: only hash the sealed bytes.
            with repository.open_read(node, epoch, artifact.file) as stream:
                size, sha256 = stream_digest(progress.counted(stream))
            problems = _compare(artifact, size, sha256)
            if problems:
                raise IntegrityError("; ".join(problems))
        entry["checksum"] = "ok"
        # Types that store more than their artifact (a files tree's objects) check the rest here.
        context = RunContext(repository, node, epoch, scratch or None, identities=identities, artifact=artifact)
        extra = asset_type(artifact.asset_type).verify_extra(artifact, context, deep)
        if extra:
            entry["extra"] = extra
        entry["ok"] = True
    except NodekeepError as exc:
        entry["ok"] = False
        entry["error"] = exc.message
    entry["seconds"] = round(time.monotonic() - began, 3)
    return entry


def _record_proof(repository, node, epoch, artifact: Artifact, checks: dict[str, Any], proof_key) -> dict[str, Any]:
    """The signed proof of the full check that just passed; a repository that refuses it (read-only credentials)
    is reported beside the proof, it does not make the verified data fail."""
    how = str(checks.get("check_how") or "PRAGMA integrity_check")
    try:
        return proofs.write_proof(repository, node, epoch, artifact, how, proof_key)
    except NodekeepError as exc:
        return {"file": proofs.proof_name(artifact), "written": False, "error": exc.message}


def _ran_full_check(artifact: Artifact, checks: dict[str, Any], check: str) -> bool:
    """The full check of the type that records proofs ran here and passed (not proven at capture instead)."""
    return (
        asset_type(artifact.asset_type).records_proof
        and check == "integrity"
        and checks.get("integrity") == "ok"
        and not checks.get("integrity_proven")
    )


def _deep_check(repository, node, epoch, artifact: Artifact, identities, scratch: str, check: str) -> dict[str, Any]:
    """Decrypt into scratch space (one pass: checksums and content together) and run the asset's check."""
    kind = asset_type(artifact.asset_type)
    workdir = tempfile.mkdtemp(prefix="verify-%s-" % artifact.name, dir=scratch)
    try:
        target = kind.staging_path(artifact, workdir)
        context = RunContext(repository, node, epoch, scratch, identities=identities, artifact=artifact)
        with kind.restore_into(target, context=context) as staged:
            restored = _unseal_checked(repository, node, epoch, artifact, identities, staged)
            checks = kind.deep_check(staged.path, artifact, check)
        return {"deep": "ok", "content_sha256": _shown_digest(artifact, restored), "checks": checks}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        kind.drop_scratch(artifact)


def _shown_digest(artifact: Artifact, result) -> str | None:
    """The plaintext SHA-256 for a result only where the manifest records it (a map of pieces), never for data."""
    return None if artifact.content_sha256 is None else result.content.sha256


def _unseal_checked(repository, node, epoch, artifact: Artifact, identities, staged):
    with repository.open_read(node, epoch, artifact.file) as stream:
        result = unseal(stream, staged.stream, identities, sink_name=staged.path, limit=artifact.content_size)
    staged.complete()
    problems = _compare(artifact, result.sealed.size, result.sealed.sha256, result.content)
    if problems:
        raise IntegrityError(
            "artifact %s: %s" % (artifact.name, "; ".join(problems)),
            "do not trust this copy; restore another epoch or copy",
        )
    return result


# --------------------------------------------------------------------------
# staged restore
# --------------------------------------------------------------------------


def _restore_plan(
    repository: Repository,
    node: str,
    epoch: str,
    public_key: str,
    target_root: str,
    artifacts: Iterable[str] | None,
    output: str | None,
) -> tuple[str, Manifest, str, str | None]:
    """What a restore and its check mode both start with: the staging root checked, the epoch resolved, its
    signed manifest, and where it goes (``target_root``, or ``output`` for one asset)."""
    _check_staging_root(target_root, output)
    epoch = resolve_epoch(repository, node, epoch)
    manifest = load_manifest(repository, node, epoch, public_key)
    target_root, output = _restore_root(manifest, target_root, artifacts, output)
    return epoch, manifest, target_root, output


def restore_epoch(
    repository: Repository,
    node: str,
    epoch: str,
    public_key: str,
    identities: list,
    target_root: str,
    artifacts: Iterable[str] | None = None,
    force: bool = False,
    check: str = "integrity",
    output: str | None = None,
) -> dict[str, Any]:
    """Verify the manifest, then unseal each artifact beside its staging target, check it and link it in.

    ``output``: restore one asset to this path instead (a file, or a directory for tree assets), as
    ``litestream restore -o``; ``target_root`` is then not used.
    """
    epoch, manifest, target_root, output = _restore_plan(repository, node, epoch, public_key, target_root, artifacts, output)
    with safefs.Jail(target_root, RestoreError, _jail_remedy(output)) as jail:
        # Refuse before writing anything when a target exists or a link is in the way: nothing is half restored.
        planned = _planned_targets(jail, manifest, target_root, artifacts, force, output)
        restored = []
        progress.current().expect(len(planned))
        for number, (artifact, kind, target) in enumerate(planned, 1):
            with progress.current().step(artifact.name, "restore", artifact.content_size, number):
                restored.append(
                    _restore_artifact(
                        repository, node, epoch, artifact, kind, target, identities, force, check, jail, public_key
                    )
                )
    report = {
        "node": node,
        "epoch": epoch,
        "target": target_root,
        "artifacts": restored,
        "manifest": manifest.summary(),
    }
    if output:
        report["output"] = output
    _raise_warnings(report)
    return report


def _raise_warnings(report: dict[str, Any]) -> None:
    """What an asset's check says the operator must know (a PostgreSQL load without its owners and GRANTs)
    goes to the report's ``asset_warnings``, which the modules print as Ansible warnings."""
    warnings = [text for entry in report["artifacts"] for text in (entry.get("checks") or {}).get("warnings") or []]
    if warnings:
        report["asset_warnings"] = warnings


JAIL_REMEDY = (
    "remove the link, or set nodekeep_restore_to to a real directory (no symlink at any level); "
    "a restore never reads or writes through a link it did not create"
)


#: asset types whose artifact restores to one file or directory of the operator's choice (``output``)
OUTPUT_TYPES = ("sqlite", "rocksdb", "files", "config", "secret")


def _jail_remedy(output: str | None) -> str:
    if not output:
        return JAIL_REMEDY
    return (
        "remove the link, or set nodekeep_restore_output to a path without a symlink at any level; "
        "a restore never reads or writes through a link it did not create"
    )


def _check_staging_root(target_root: str, output: str | None) -> None:
    """Refuse a relative staging directory, or a relative ``output``, before anything is read."""
    if output:
        if not os.path.isabs(output) or os.path.normpath(output) == "/":
            raise RepositoryError(
                "the restore output %r is not an absolute path to a file or directory" % (output,),
                "set nodekeep_restore_output to an absolute path, for example /srv/restore/app.db",
            )
    elif not target_root or not os.path.isabs(target_root):
        raise RepositoryError(
            "the restore target %r is not an absolute path" % (target_root,),
            "set nodekeep_restore_to to an absolute staging directory",
        )


def _restore_root(manifest: Manifest, target_root: str, artifacts, output: str | None) -> tuple[str, str | None]:
    """(jail root, output path): the staging directory, or with ``output`` the directory it goes into."""
    if not output:
        return target_root, None
    wanted = list(artifacts) if artifacts else [a.name for a in manifest.artifacts]
    if len(wanted) != 1:
        raise RepositoryError(
            "a restore to nodekeep_restore_output restores one asset; %d were selected (%s)"
            % (len(wanted), ", ".join(wanted)),
            "set nodekeep_restore_assets to the one asset to restore to %s" % output,
        )
    artifact = manifest.artifact(wanted[0])
    if artifact.asset_type not in OUTPUT_TYPES:
        raise RepositoryError(
            "asset %s is of type %s, which restores only into staging, not to a path of your choice"
            % (artifact.name, artifact.asset_type),
            "unset nodekeep_restore_output (restore into nodekeep_restore_to); types %s restore to a chosen path"
            % ", ".join(OUTPUT_TYPES),
        )
    output = os.path.normpath(output)
    return os.path.dirname(output), output


def _planned_targets(jail, manifest: Manifest, target_root: str, artifacts, force: bool, output=None) -> list:
    """(artifact, asset type, staging target) of each wanted artifact; refuses a link on the way or a taken target.

    The staging path is walked from ``/`` one directory at a time without following anything (the jail):
    the same walk in check mode and for real, so check mode never says "would restore" where the real run refuses.
    With ``output`` the one wanted artifact goes there (``_restore_root`` checked it).
    """
    wanted = list(artifacts) if artifacts else [a.name for a in manifest.artifacts]
    planned = []
    for artifact in [manifest.artifact(name) for name in wanted]:
        kind = asset_type(artifact.asset_type)
        target = jail.inside(output or kind.staging_path(artifact, target_root))
        if jail.check(target) and not force:
            where = (
                "choose another nodekeep_restore_output"
                if output
                else "restore into an empty staging path (nodekeep_restore_to)"
            )
            raise RepositoryError(
                "the restore target %s already exists" % target,
                "%s or set nodekeep_restore_force: true (the existing data is kept beside it as "
                ".nodekeep-replaced-<time>)" % where,
            )
        planned.append((artifact, kind, target))
    return planned


def plan_restore(
    repository: Repository,
    node: str,
    epoch: str,
    public_key: str,
    target_root: str,
    artifacts: Iterable[str] | None = None,
    force: bool = False,
    output: str | None = None,
) -> dict[str, Any]:
    """Check mode of ``restore_epoch``: the signature checked and every target walked as for real, nothing written."""
    epoch, manifest, target_root, output = _restore_plan(repository, node, epoch, public_key, target_root, artifacts, output)
    with safefs.Jail(target_root, RestoreError, _jail_remedy(output)) as jail:
        planned = _planned_targets(jail, manifest, target_root, artifacts, force, output)
    return {
        "changed": True,
        "node": node,
        "epoch": epoch,
        "target": target_root,
        "artifacts": [
            {
                "name": artifact.name,
                "asset_type": artifact.asset_type,
                "path": target,
                "source_path": artifact.source.get("path"),
                "size": artifact.content_size,
                "sha256": artifact.content_sha256,
                "checks": {},
            }
            for artifact, _kind, target in planned
        ],
        "manifest": manifest.summary(),
        **({"output": output} if output else {}),
    }


def _restore_artifact(
    repository, node, epoch, artifact, kind, target, identities, force, check, jail, public_key
) -> dict[str, Any]:
    """One artifact unsealed, checked and placed at ``target``, inside directories the jail pinned.

    Types that hand the path to another program that cannot use our descriptors
    (a ZFS mountpoint) get the real path, walked for links just before.
    """
    began = time.monotonic()
    context = RunContext(repository, node, epoch, None, identities=identities, artifact=artifact)
    swept: list[str] = []
    if kind.pinned_restore:
        place = jail.anchor(target)
        # The directory's restore lock is held throughout: what matches safefs.TEMP_RE there was left by a
        # killed run (a partial plaintext file) and is removed first.
        sweep = safefs.swept_directory(os.path.dirname(place))
    else:
        jail.check(target)  # refuses a link at any level, once more just before
        place = target
        sweep = contextlib.nullcontext(swept)
    try:
        with sweep as swept, kind.restore_into(place, force=force, context=context) as staged:
            result = _unseal_checked(repository, node, epoch, artifact, identities, staged)
            checked = time.monotonic()
            # a deep verify's signed proof of the full check of these sealed bytes (storage/proofs.py)
            proven, rejected = (
                proofs.load_proof(repository, node, epoch, artifact, public_key) if kind.records_proof else ("", "")
            )
            checks = kind.deep_check(staged.path, artifact, check, **({"proven": proven} if proven else {}))
            if rejected:
                checks["proof_rejected"] = rejected
            check_seconds = round(time.monotonic() - checked, 3)
            # A map of pieces (SQLite pages) restores more than its artifact: report what was rebuilt.
            rebuilt = staged.facts.get("rebuilt") or {}
            # A tree's plain size is its files' bytes (a files artifact's content is only its index).
            tree_bytes = (staged.facts.get("entries") or {}).get("bytes")
    except NodekeepError as exc:
        exc.problem, exc.remedy = jail.real(exc.problem), jail.real(exc.remedy)
        exc.args = (exc.message,)
        raise
    except OSError as exc:
        raise describe_os_error(exc, "restoring %s" % artifact.name, target)
    entry = {
        "name": artifact.name,
        "asset_type": artifact.asset_type,
        "path": target,
        "source_path": artifact.source.get("path"),
        "size": rebuilt.get("size", result.content.size),
        # never an unkeyed hash of restored data (a rebuilt database's is checked inside, not reported)
        "sha256": None if rebuilt else _shown_digest(artifact, result),
        "checks": checks,
        "seconds": round(time.monotonic() - began, 3),
        "check_seconds": check_seconds,  # of "seconds": the asset's own deep check (drill RTO breakdown)
    }
    if isinstance(tree_bytes, int) and not isinstance(tree_bytes, bool):
        entry["plain_size"] = tree_bytes
    if rebuilt:
        # a page map's restore: packs unsealed, and the bytes read back to finish the file's SHA-256
        entry["rebuilt"] = {key: rebuilt[key] for key in ("pages", "packs_read", "read_back_bytes") if key in rebuilt}
    if swept:
        entry["swept"] = swept  # temporary names of killed runs, removed
    return entry
