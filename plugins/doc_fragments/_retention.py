# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# This fragment is private to nodekeep.backup: do not use it from other collections.

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment:
    # The keep-hourly/daily/weekly/monthly policy epoch_prune applies to epochs and btrfs_snapshot and
    # zfs_snapshot apply to snapshots; mirrors RETENTION_OPTIONS in plugins/module_utils/common.py and
    # RetentionPolicy in plugins/module_utils/retention.py. A count left out keeps none of that kind.
    DOCUMENTATION = r"""
options:
  keep_last:
    description: Keep the newest N (epochs, or snapshots when the snapshot modules prune).
    type: int
  keep_hourly:
    description: Keep one for each of the N most recent hours that have one.
    type: int
  keep_daily:
    description: Keep one for each of the N most recent days that have one.
    type: int
  keep_weekly:
    description: Keep one for each of the N most recent ISO weeks that have one.
    type: int
  keep_monthly:
    description: Keep one for each of the N most recent months that have one.
    type: int
  keep_yearly:
    description: Keep one for each of the N most recent years that have one.
    type: int
  keep_within:
    description:
      - Keep everything within this time of the newest, for example V(7d), V(36h), V(2w), V(1y6m)
        (units y, m, w, d, h; years and months are calendar ones).
    type: str
  pick:
    description:
      - Which one represents a period. V(first) (the default) never changes once chosen, so for epochs it is
        the one a per-period Object Lock was put on when it was uploaded. V(last) is restic's choice (the
        newest of each period).
    type: str
    choices: [first, last]
    default: first
"""
