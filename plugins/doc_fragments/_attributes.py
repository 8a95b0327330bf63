# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# This fragment is private to nodekeep.backup: do not use it from other collections.

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment:
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
    description: Use C(group/nodekeep.backup.all) in C(module_defaults) to set shared options (such as the repository) once.
    support: full
    membership:
      - nodekeep.backup.all
"""
