# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# This fragment is private to nodekeep.backup: do not use it from other collections.

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment:
    # Modules working on paths: members of the group with every module only.
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in C(check_mode) and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in C(check_mode)), when in diff mode.
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
  action_group:
    description:
      - Member of C(group/nodekeep.backup.all), which holds every module of the collection.
      - Defaults set for that group in C(module_defaults) reach every member, so set only options all of them accept.
    support: full
    membership:
      - nodekeep.backup.all
"""

    # Modules that read or write a repository: also members of the repository group.
    # (ansible-test wants literal strings here, hence the repetition of the common part.)
    REPOSITORY = r"""
options: {}
attributes:
  check_mode:
    description: Can run in C(check_mode) and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in C(check_mode)), when in diff mode.
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
  action_group:
    description:
      - Use C(group/nodekeep.backup.repository) in C(module_defaults) to set the repository and node once for
        every module that reads or writes epochs.
    support: full
    membership:
      - nodekeep.backup.all
      - nodekeep.backup.repository
"""
