"""Error types shared by the readers.

``DataError`` marks *bad input* (a corrupt JPEG, a truncated chunk, a count mismatch). The clip
dataset catches it during training, logs it and skips the item; everywhere else it propagates with
a message that names the file and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union


class DataError(RuntimeError):
    """Bad or inconsistent input data (message names the file and how to fix it)."""


class MissingDepthError(FileNotFoundError):
    """A precomputed disparity map is missing; the message names the path and the command."""

    def __init__(self, expected: Union[str, Path], command: Optional[str] = None, what: str = "depth map"):
        self.expected = Path(expected)
        self.command = command
        msg = f"Missing {what}: expected {self.expected}."
        if command:
            msg += f"\nCreate it with:\n    {command}"
        msg += "\n(or pass depth_mode='zeros' for a smoke test only: the model then learns nothing about depth)"
        super().__init__(msg)
