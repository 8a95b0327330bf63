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
      - An absolute local directory. Created with mode V(0700) when missing.
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
"""
