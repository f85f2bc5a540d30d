"""Conditional writes on object stores: the compare-and-set under the file backend's claims.

Each object store has its own way to say "create this object only if it is absent" and
"replace (or delete) it only if nobody changed it since I read it". One small class per
store speaks it, through the fsspec driver where the driver exposes the condition and
through the SDK client the driver holds where it does not:

- **S3** (s3fs over aiobotocore): the version is the ETag of ``GetObject``; create with
  ``_pipe_file(mode="create")`` (``If-None-Match: *``); replace and delete with
  ``PutObject`` / ``DeleteObject`` and ``IfMatch`` the ETag.
- **Azure** (adlfs over azure-storage-blob): the version is the ETag of the download;
  create with ``_pipe_file(mode="create")`` (``upload_blob(overwrite=False)``,
  ``If-None-Match: *``); replace with ``_pipe_file(etag=…,
  match_condition=IfNotModified)``, which adlfs passes to ``upload_blob`` (``If-Match``);
  delete through the SDK's blob client, ``delete_blob`` with the same condition (adlfs's
  ``_rm_file`` takes none).
- **GCS** (gcsfs, JSON API): the version is the object's ``generation``, read from its
  metadata, then the media of exactly that generation; every write is a media upload
  (``uploadType=media``, see :meth:`GcsConditions._upload` for why not gcsfs's own),
  with ``ifGenerationMatch=0`` to create and ``ifGenerationMatch`` the generation to
  replace; delete with ``DELETE`` and ``ifGenerationMatch``; all through gcsfs's request
  helper, which signs and retries.

A refused condition (HTTP 412, or 409 for an Azure create) is a lost race, reported as
``False``; the caller reads again and decides again. Azure's blob leases are not used:
a lease is a lock, and a lock held by a worker that died blocks everyone until it
expires, where a lost compare-and-set costs one more read.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

__all__ = ["Conditions", "conditions_for"]


class Conditions(ABC):
    """Versioned reads and conditional writes on one kind of object store.

    ``fs`` is passed to each call, not kept: the connection swaps the filesystem when the
    caller moves to another event loop.
    """

    async def put(self, fs: Any, full: str, data: bytes) -> None:
        """Write ``data`` unconditionally (the driver's own upload, unless overridden)."""
        await fs._pipe_file(full, data)

    @abstractmethod
    async def read(self, fs: Any, full: str) -> tuple[bytes, str] | None:
        """The object's content and version, or None when it is absent."""

    @abstractmethod
    async def create(self, fs: Any, full: str, data: bytes) -> bool:
        """Write ``data`` if the object is absent; False if it exists."""

    @abstractmethod
    async def replace(self, fs: Any, full: str, data: bytes, version: str) -> bool:
        """Write ``data`` if the object is still at ``version``; False if it changed."""

    @abstractmethod
    async def delete(self, fs: Any, full: str, version: str) -> bool:
        """Delete the object if it is still at ``version``; False if it changed.

        An object already gone counts as deleted.
        """


def _s3_precondition_failed(exc: BaseException) -> bool:
    response = getattr(exc.__cause__, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return code in ("PreconditionFailed", "ConditionalRequestConflict", "412")
    return False


class S3Conditions(Conditions):
    """S3 (s3fs over aiobotocore): ETags, ``If-None-Match: *`` and ``IfMatch``."""

    async def read(self, fs: Any, full: str) -> tuple[bytes, str] | None:
        """``GetObject``: the body and its ETag from one response."""
        bucket, key, _ = fs.split_path(full)
        try:
            response = await fs._call_s3("get_object", Bucket=bucket, Key=key)
        except FileNotFoundError:
            return None
        async with response["Body"] as body:
            content: bytes = await body.read()
        return content, str(response["ETag"])

    async def create(self, fs: Any, full: str, data: bytes) -> bool:
        """``PutObject`` with ``If-None-Match: *``."""
        return await self._guarded(fs._pipe_file(full, data, mode="create"))

    async def replace(self, fs: Any, full: str, data: bytes, version: str) -> bool:
        """``PutObject`` with ``IfMatch``."""
        return await self._guarded(fs._pipe_file(full, data, IfMatch=version))

    async def delete(self, fs: Any, full: str, version: str) -> bool:
        """``DeleteObject`` with ``IfMatch``."""
        bucket, key, _ = fs.split_path(full)
        call = fs._call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=version)
        return await self._guarded(call, gone=True)

    @staticmethod
    async def _guarded(call: Any, *, gone: bool = False) -> bool:
        """Await ``call``; False when its condition was refused. ``gone``: what an
        absent object means (for a delete, done; for a write, the version read is gone)."""
        try:
            await call
        except FileExistsError:
            return False
        except FileNotFoundError:
            return gone
        except OSError as exc:
            if _s3_precondition_failed(exc):
                return False
            raise
        return True


class AzureConditions(Conditions):
    """Azure Blob Storage (adlfs over azure-storage-blob): ETags, ``If-None-Match: *`` and
    ``If-Match``."""

    async def read(self, fs: Any, full: str) -> tuple[bytes, str] | None:
        """One download: the content and the ETag it was read at (later chunks of a large
        blob are pinned to that ETag by the SDK)."""
        from azure.core.exceptions import ResourceNotFoundError

        container, blob, _ = fs.split_path(full)
        async with fs.service_client.get_blob_client(container=container, blob=blob) as client:
            try:
                stream = await client.download_blob()
            except ResourceNotFoundError:
                return None
            content: bytes = await stream.readall()
            return content, str(stream.properties.etag)

    async def create(self, fs: Any, full: str, data: bytes) -> bool:
        """``upload_blob(overwrite=False)``: ``If-None-Match: *``."""
        try:
            await fs._pipe_file(full, data, mode="create")
        except FileExistsError:
            return False
        return True

    async def replace(self, fs: Any, full: str, data: bytes, version: str) -> bool:
        """``upload_blob`` with ``If-Match`` the ETag (passed through adlfs)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        try:
            await fs._pipe_file(
                full, data, etag=version, match_condition=MatchConditions.IfNotModified
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    async def delete(self, fs: Any, full: str, version: str) -> bool:
        """``delete_blob`` with ``If-Match`` (adlfs's ``_rm_file`` takes no condition)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        container, blob, _ = fs.split_path(full)
        async with fs.service_client.get_blob_client(container=container, blob=blob) as client:
            try:
                await client.delete_blob(
                    etag=version, match_condition=MatchConditions.IfNotModified
                )
            except ResourceModifiedError:
                return False
            except ResourceNotFoundError:
                return True
            finally:
                fs.invalidate_cache(fs._parent(full))
        return True


class GcsConditions(Conditions):
    """Google Cloud Storage (gcsfs, JSON API): generations and ``ifGenerationMatch``.

    gcsfs raises ``FileExistsError`` for every HTTP 412, the status of a failed
    precondition.
    """

    async def read(self, fs: Any, full: str) -> tuple[bytes, str] | None:
        """The metadata (its generation), then the media of exactly that generation.

        In that order: content read first could be older than the generation read after
        it, and a write conditional on the newer generation would then succeed on a
        decision made from stale content.
        """
        bucket, key, _ = fs.split_path(full)
        while True:
            try:
                meta = await fs._call("GET", "b/{}/o/{}", bucket, key, json_out=True)
            except FileNotFoundError:
                return None
            generation = str(meta["generation"])
            try:
                _, content = await fs._call(
                    "GET",
                    f"{fs._location}/download/storage/v1/b/{{}}/o/{{}}",
                    bucket,
                    key,
                    alt="media",
                    generation=generation,
                )
            except FileNotFoundError:
                continue  # replaced (or deleted) between the two requests: read again
            return bytes(content), generation

    async def put(self, fs: Any, full: str, data: bytes) -> None:
        """A media upload."""
        await self._upload(fs, full, data, None)

    async def create(self, fs: Any, full: str, data: bytes) -> bool:
        """A media upload with ``ifGenerationMatch=0``."""
        return await self._upload(fs, full, data, "0")

    async def replace(self, fs: Any, full: str, data: bytes, version: str) -> bool:
        """A media upload with ``ifGenerationMatch`` the generation read."""
        return await self._upload(fs, full, data, version)

    @staticmethod
    async def _upload(fs: Any, full: str, data: bytes, generation: str | None) -> bool:
        """One ``uploadType=media`` request: the body is the object, byte for byte.

        Not gcsfs's upload, a ``multipart/related`` body whose data ends at a bare LF
        before the closing delimiter: a payload whose last byte is CR is then ambiguous
        (RFC 2046 gives a CRLF before a delimiter to the delimiter), and a parser that
        reads it so drops that byte. gcsfs's uploads also take no generation but ``0``.
        """
        bucket, key, _ = fs.split_path(full)
        try:
            await fs._call(
                "POST",
                f"{fs._location}/upload/storage/v1/b/{{}}/o",
                bucket,
                uploadType="media",
                name=key,
                ifGenerationMatch=generation,  # None: left out of the query
                headers={"Content-Type": "application/octet-stream"},
                data=data,
                json_out=True,
            )
        except FileExistsError:  # gcsfs's name for 412: the precondition did not hold
            return False
        finally:
            fs.invalidate_cache(fs._parent(full))
        return True

    async def delete(self, fs: Any, full: str, version: str) -> bool:
        """``DELETE`` with ``ifGenerationMatch``."""
        bucket, key, _ = fs.split_path(full)
        try:
            await fs._call("DELETE", "b/{}/o/{}", bucket, key, ifGenerationMatch=version)
        except FileExistsError:
            return False
        except FileNotFoundError:
            return True
        finally:
            fs.invalidate_cache(fs._parent(full))
        return True


_BY_PROTOCOL: dict[str, type[Conditions]] = {
    "s3": S3Conditions,
    "s3a": S3Conditions,
    "az": AzureConditions,
    "abfs": AzureConditions,
    "abfss": AzureConditions,
    "gs": GcsConditions,
    "gcs": GcsConditions,
}


def conditions_for(protocol: str) -> Conditions | None:
    """The conditional writes of the store behind ``protocol``, or None where OmniQ knows
    none (other fsspec filesystems: updates are then serialised in one event loop only)."""
    cls = _BY_PROTOCOL.get(protocol)
    return cls() if cls is not None else None
