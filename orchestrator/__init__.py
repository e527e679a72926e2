"""Bulk Huawei Cloud EVS snapshots: never doubled, never silently skipped."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
