"""Uploaded files: streamed to ``<data dir>/files/<file_id>`` and read back in chunks.

Uploads never sit whole in memory: the API writes each received chunk (batched to 1 MiB) in
a worker thread, and ``process_file`` reads the file in 1 MiB chunks. Workers must see the
same data directory as the API (the same machine, or a shared volume).

A file belongs to the owner who uploaded it (kept in its metadata): other owners can neither
delete it nor name it in a task's arguments (:data:`FileId` marks such arguments); admins can.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import anyio
import orjson
from pydantic import BaseModel, Field

from .auth import Caller
from .exceptions import PayloadTooLarge

#: Bytes written or read at a time.
CHUNK = 1 << 20
#: What a file id looks like (a UUID4 in hex): nothing else ever reaches the filesystem.
FILE_ID = re.compile(r"^[0-9a-f]{32}$")


class FileReference:
    """Marks a task argument that names an upload: the API refuses (404) a submit naming a file
    that does not exist or belongs to another owner."""


#: A task argument holding the id of an upload of the submitter's.
FileId = Annotated[str, Field(pattern=FILE_ID.pattern, description="The id POST /files returned "
                              "(of a file you uploaded)."), FileReference()]


def file_arguments(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of an argument model declared as :data:`FileId`."""
    return tuple(name for name, info in model.model_fields.items()
                 if any(isinstance(item, FileReference) for item in info.metadata))


def files_dir(data_dir: Path) -> Path:
    """Where uploads live."""
    return Path(data_dir).resolve() / "files"


def file_path(data_dir: Path, file_id: str) -> Path:
    """The stored file of ``file_id`` (which must match :data:`FILE_ID`)."""
    if not FILE_ID.match(file_id):
        raise ValueError(f"{file_id!r} is not a file id")
    return files_dir(data_dir) / file_id


def read_meta(data_dir: Path, file_id: str) -> dict[str, Any]:
    """The upload's metadata (filename, content type, size)."""
    path = file_path(data_dir, file_id).with_suffix(".json")
    try:
        meta: dict[str, Any] = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise FileNotFoundError(f"no uploaded file {file_id}: upload it with POST /files") from None
    return meta


async def owned_meta(data_dir: Path, file_id: str, caller: Caller) -> dict[str, Any] | None:
    """The upload's metadata if it exists and ``caller`` may use it (its owner, or an admin);
    None otherwise, the same answer either way so that ids of other owners' files do not leak."""
    if not FILE_ID.match(file_id):
        return None
    try:
        meta: dict[str, Any] = orjson.loads(
            await anyio.Path(file_path(data_dir, file_id).with_suffix(".json")).read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None
    return meta if caller.may_see(meta.get("owner")) else None


async def save_stream(data_dir: Path, chunks: AsyncIterator[bytes], limit: int,
                      filename: str | None, content_type: str | None, owner: str) -> dict[str, Any]:
    """Write ``chunks`` to a new file of ``owner``'s; raise :class:`PayloadTooLarge` past
    ``limit`` bytes."""
    directory = files_dir(data_dir)
    await anyio.to_thread.run_sync(lambda: directory.mkdir(parents=True, exist_ok=True))
    file_id = uuid.uuid4().hex
    final = directory / file_id
    partial = directory / f"{file_id}.part"
    size = 0
    buffer = bytearray()
    handle = await anyio.open_file(partial, "wb")
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"upload is larger than {limit} bytes (TASKGATE_MAX_UPLOAD_BYTES)")
            buffer += chunk
            if len(buffer) >= CHUNK:
                await handle.write(bytes(buffer))
                buffer.clear()
        if buffer:
            await handle.write(bytes(buffer))
    except BaseException:
        await handle.aclose()
        await anyio.Path(partial).unlink(missing_ok=True)
        raise
    await handle.aclose()
    meta = {"file_id": file_id, "filename": filename, "content_type": content_type, "size": size,
            "owner": owner}
    await anyio.Path(final.with_suffix(".json")).write_bytes(orjson.dumps(meta))
    await anyio.Path(partial).rename(final)
    return meta


async def delete(data_dir: Path, file_id: str) -> bool:
    """Remove a stored file and its metadata; False if there was none."""
    path = anyio.Path(file_path(data_dir, file_id))
    if not await path.exists():
        return False
    await path.unlink()
    await path.with_suffix(".json").unlink(missing_ok=True)
    return True
