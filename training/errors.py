"""What a gate raises (torch-free: the export gates and the INT8 gates both raise it)."""

from __future__ import annotations


class GateFailed(RuntimeError):
    """A model failed a gate; it is not published. The message names the gate and by how much it missed."""
