"""Following the directory file: the mounted directory ConfigMap.

The kubelet replaces the file when the ConfigMap changes; the follower rereads
it when its modification time changes (once a second, or at once when a
request shows that a newer epoch exists).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from agentmem.directory import Directory, DirectoryError

log = logging.getLogger(__name__)


class DirectoryUnreadableError(RuntimeError):
    """The directory file cannot be read or parsed; the message says why."""


class DirectoryFollower:
    def __init__(
        self,
        path: str,
        on_change: Callable[[Directory], None] | None = None,
        interval: float = 1.0,
    ) -> None:
        self.path = path
        self.on_change = on_change
        self.interval = interval
        self.directory: Directory | None = None
        #: The directory before the current one (a partition's previous owner
        #: still serves it while its hand-off lasts).
        self.previous: Directory | None = None
        self._mtime = 0.0

    def load(self, force: bool = False) -> bool:
        """Read the file if it changed (always with ``force``); True when it did.

        Raises :class:`DirectoryUnreadableError` with ``force``; otherwise an unreadable
        file keeps the directory we have.
        """
        try:
            mtime = os.stat(self.path).st_mtime
            if not force and mtime == self._mtime:
                return False
            with open(self.path, encoding="utf-8") as f:
                directory = Directory.from_json(f.read())
        except (OSError, DirectoryError) as exc:
            if force:
                raise DirectoryUnreadableError(
                    f"cannot read the directory {self.path}: {exc}"
                ) from exc
            epoch = self.directory.epoch if self.directory is not None else None
            log.warning("keeping directory epoch %s: %s", epoch, exc)
            return False
        self._mtime = mtime
        changed = directory != self.directory
        if changed and self.directory is not None and directory.epoch > self.directory.epoch:
            self.previous = self.directory
        self.directory = directory
        if changed and self.on_change is not None:
            self.on_change(directory)
        return changed

    async def follow(self) -> None:
        """Reread the file when it changes, until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                if self.load():
                    assert self.directory is not None
                    log.info("directory epoch %s", self.directory.epoch)
            except Exception:
                log.exception("following the directory failed")
