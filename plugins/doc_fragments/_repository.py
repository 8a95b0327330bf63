# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# This fragment is private to nodekeep.backup: do not use it from other collections.

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  repository:
    description:
      - The repository holding the epochs, laid out as C(REPOSITORY/NODE/EPOCH/).
      - Either an absolute local directory or C(s3://BUCKET/PREFIX) (PREFIX optional), a bucket read and written
        directly. Every module using this option accepts both. Another scheme fails with
        C(only local paths and s3:// URLs are supported), a relative path with C(is not an absolute path).
      - A local directory is created with mode V(0700) when missing by M(nodekeep.backup.epoch_backup); the modules
        that only read it fail with C(there is no repository at PATH) instead.
      - An C(s3://) URL carries no connection settings. They come from the usual AWS sources of the host the module
        runs on, as boto3 finds them, so set them there (C(~/.aws/) of the remote user) or with the task's or play's
        C(environment) keyword. Credentials are C(AWS_ACCESS_KEY_ID) and C(AWS_SECRET_ACCESS_KEY)
        (with C(AWS_SESSION_TOKEN)), else the profile C(AWS_PROFILE) (V(default) when unset) in
        C(~/.aws/credentials) and C(~/.aws/config), else a container or instance role. The endpoint is
        C(AWS_ENDPOINT_URL_S3) or C(AWS_ENDPOINT_URL) or the profile's C(endpoint_url) (for MinIO, Ceph, SeaweedFS
        and other servers; AWS when none is set; a custom endpoint is addressed path-style). The region is
        C(AWS_DEFAULT_REGION) or the profile's C(region), else V(us-east-1).
      - With C(s3://), TLS certificates are checked as boto3 does (C(AWS_CA_BUNDLE) or the profile's C(ca_bundle),
        else botocore's bundled CA list); transient failures are retried 5 times (10 s connect and 60 s read
        timeouts). Objects written get no Object Lock retention or server-side encryption from the collection
        (a bucket default applies). All of these can be set per bucket only in the C(targets) entries of
        M(nodekeep.backup.epoch_copy), M(nodekeep.backup.epoch_prune) and M(nodekeep.backup.integrity_check)
        (with C(endpoint_url), keys, C(path_style), C(retries), C(object_lock_mode), C(sse)).
      - "Errors name the URL and the cause, for example C(Failed to list s3://BUCKET/PREFIX/NODE/: Could not connect
        to the endpoint URL: ...) for a wrong endpoint or port, C(NoSuchBucket) for a missing bucket, and
        C(no AWS credentials were found) when no source gave any."
    type: path
    default: /var/backups/nodekeep
  node:
    description:
      - The node whose epochs are read or written, normally C(inventory_hostname).
      - Letters, digits, dot, dash and underscore.
    type: str
    required: true
"""

    AGE_RECIPIENTS = r"""
options:
  recipients:
    description:
      - age recipients the data is encrypted to, as strings
        (C(age1...) X25519 keys, C(ssh-ed25519 ...) or C(ssh-rsa ...) public keys).
      - Together with O(recipients_files), at least one is required. Encryption fails closed
        when none is given or one does not parse; nothing is written then.
    type: list
    elements: str
    default: []
  recipients_files:
    description:
      - Files with one recipient per line (C(#) comments and blank lines are ignored), as C(age -R) reads.
    type: list
    elements: path
    default: []
"""

    AGE_IDENTITIES = r"""
options:
  identities:
    description:
      - age identities (C(AGE-SECRET-KEY-1...)) or unencrypted OpenSSH private keys, as strings.
      - Secret; never logged.
    type: list
    elements: str
    default: []
  identity_files:
    description:
      - Files holding age identities (as made by C(age-keygen)) or OpenSSH private keys.
    type: list
    elements: path
    default: []
"""

    # Modules that read one epoch back (epoch_restore, integrity_check); mirrors EPOCH_OPTIONS in
    # plugins/module_utils/common.py.
    EPOCH = r"""
options:
  epoch:
    description: V(latest) (the newest complete epoch) or an epoch name.
    type: str
    default: latest
  public_key:
    description:
      - The node's Ed25519 public key (C(ssh-ed25519 AAAA...)), kept on the controller (C(keys/NODE.pub)).
      - The manifest signature is checked against it before anything else of the epoch is read.
    type: str
    required: true
  artifacts:
    description: Only these artifacts (by asset name). Default all.
    type: list
    elements: str
    default: []
  check:
    description:
      - The SQLite check run on each decrypted database (a restored one before it is linked into place, or the
        scratch copy of a deep verify), V(integrity) (C(PRAGMA integrity_check)) or V(quick) (C(PRAGMA quick_check)).
    type: str
    choices: [integrity, quick]
    default: integrity
  known_latest:
    description:
      - The newest epoch of O(node) the controller has a record of (the roles read it from
        C(nodekeep_results_dir/NODE/backup-EPOCH.json)). When it is not a complete epoch in the repository, the
        repository was rolled back or its newest epochs were deleted, the module fails, or warns with
        O(on_rollback=warn), instead of silently taking an older epoch as the latest.
    type: str
  on_rollback:
    description:
      - What to do when O(known_latest) is missing from the repository, or when the signed sequence of the node's
        epochs shows that its newest epochs were deleted (an epoch signed while the node's previous one was missing,
        a sequence number used twice, a linked epoch replaced; see docs/manifest.md). V(fail) (nothing is read
        further) or V(warn) (go on with the newest epoch present, with a warning in the result).
    type: str
    choices: [fail, warn]
    default: fail
"""
