"""What the file backend's components share: their subdirectory's store, and msgpack."""

from __future__ import annotations

import os
from typing import Any, ClassVar

import msgspec

from omniq.config import Settings
from omniq.errors import StorageError
from omniq.storage._component import Component
from omniq.storage.file._store import Store
from omniq.storage.file.connection import FileConnection

__all__ = ["FileComponent", "decode", "encoder"]

encoder = msgspec.msgpack.Encoder()


def decode(decoder: msgspec.msgpack.Decoder[Any], data: bytes, what: str) -> Any:
    """``data`` decoded; a damaged object raises StorageError naming ``what`` it held."""
    try:
        return decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise StorageError(f"file backend: a stored {what} cannot be decoded: {exc}") from exc


class FileComponent(Component[FileConnection]):
    """A component of the file backend: the store of its subdirectory of the connection's
    root (``tasks/``, ``results/``, ``events/``, ``schedules/``), held while connected."""

    connection_class = FileConnection
    #: The component's subdirectory under the connection's root.
    subdir: ClassVar[str] = ""

    def __init__(
        self,
        url: str | os.PathLike[str] | None = None,
        settings: Settings | None = None,
        *,
        connection: FileConnection | None = None,
    ) -> None:
        super().__init__(url, settings, connection=connection)
        self._store: Store | None = None

    async def connect(self) -> None:
        """Take a reference on the connection (opening it if first). Safe to call twice."""
        if self._store is None:
            await super().connect()
            self._store = self.connection.store(self.subdir)

    async def close(self) -> None:
        """Give the reference back (closing the connection if last). Safe to call twice."""
        if self._store is not None:
            self._store = None
        await super().close()

    async def _s(self) -> Store:
        # The store, held from connect to close: every operation starts here, so it is one
        # attribute read once connected.
        if self._store is None:
            await self.connect()
        assert self._store is not None
        return self._store
