# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# This fragment is private to nodekeep.backup: do not use it from other collections.

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/nodekeep.backup.all) in C(module_defaults) to set options such as O(repository) once.
    support: full
    membership:
      - nodekeep.backup.all
"""
