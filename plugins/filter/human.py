# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that print sizes and durations as the collection's modules do (core/human.py, IEC units)."""

from __future__ import annotations

from ansible_collections.nodekeep.backup.plugins.module_utils.core.human import human_bytes, human_seconds


class FilterModule:
    def filters(self):
        return {"iec_bytes": human_bytes, "human_seconds": human_seconds}
