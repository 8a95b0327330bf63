# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs nodekeep.backup.integrity_check in the background and prints its live progress (docs/progress.md)."""

from __future__ import annotations

from ansible_collections.nodekeep.backup.plugins.plugin_utils.progress_action import ProgressAction


class ActionModule(ProgressAction):
    pass
