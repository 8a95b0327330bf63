# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# This fragment is private to nodekeep.backup: do not use it from other collections.

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment:
    # The options btrfs_snapshot and zfs_snapshot share (names, sealed send and receive; the
    # pruning policy is nodekeep.backup._retention); mirrors SNAPSHOT_OPTIONS in plugins/module_utils/common.py. The age options are
    # AGE_RECIPIENT_OPTIONS and AGE_IDENTITY_OPTIONS there.
    DOCUMENTATION = r"""
options:
  name:
    description: The snapshot name (the part after C(@)).
    type: str
  prefix:
    description: Prefix of the snapshot names this module makes and prunes.
    type: str
    default: nodekeep
  dest:
    description: O(state=sent) writes the sealed stream here (0600; written beside it and renamed when complete).
    type: path
  recipients:
    description: age recipients (C(age1...) or C(ssh-ed25519 ...)) the stream of O(state=sent) is sealed to.
    type: list
    elements: str
    default: []
  recipients_files:
    description: Files of age recipients, one per line.
    type: list
    elements: path
    default: []
  level:
    description: zstd compression level of O(state=sent), from V(1) to V(22).
    type: int
    default: 3
  src:
    description: O(state=received) reads this sealed stream.
    type: path
  identities:
    description: age identities (C(AGE-SECRET-KEY-1...)) for O(state=received).
    type: list
    elements: str
    default: []
  identity_files:
    description: Files holding age identities or OpenSSH private keys, for O(state=received).
    type: list
    elements: path
    default: []
"""
