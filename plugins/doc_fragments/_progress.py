# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# This fragment is private to nodekeep.backup: do not use it from other collections.

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  progress_file:
    description:
      - Where the module keeps a live status of its run, a JSON file (mode V(0600)) replaced atomically
        whenever it changes. It names the operation, the asset and its phase, the bytes done of the total, the
        rate and the estimated time left (format C(nodekeep.progress/v1), see C(docs/progress.md)).
      - The collection's action plugin of this module sets it by itself and prints the status while the module
        runs (every O(progress_every_seconds), with the task variable C(nodekeep_progress_interval)); set it
        only to watch a run with your own tool. Unset and outside the action plugin, no status is written.
      - A status that cannot be written never fails the run.
    type: path
  progress_every_bytes:
    description:
      - Also write the status each time this many more bytes were processed (tests use it so that what is
        written depends on bytes alone, not on time). Unset, only O(progress_every_seconds) applies.
    type: int
  progress_every_seconds:
    description:
      - Write the status at most this often while bytes move (and whenever a phase starts or ends).
    type: float
    default: 2.0
"""
