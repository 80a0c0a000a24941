"""Uploads for the file tasks: ``POST /files`` streams the body to disk."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request

from ...exceptions import PayloadTooLarge
from ...files import FILE_ID, delete, owned_meta, save_stream
from ..deps import CallerDep, SettingsDep
from ..errors import TaskgateRoute
from ..schemas import StoredFile, errors

FileId = Annotated[str, Path(pattern=FILE_ID.pattern, description="The id POST /files returned.")]


async def upload_file(
    request: Request,
    settings: SettingsDep,
    caller: CallerDep,
    filename: Annotated[str | None, Query(max_length=255, description="Its name; a `.csv` name "
                                          "(or Content-Type text/csv) makes process_file read it "
                                          "as CSV.")] = None,
) -> StoredFile:
    """Send the file as the raw request body (`curl --data-binary @big.csv`). It is streamed
    to disk, never held whole in memory; then submit `process_file` with the `file_id`. The file
    is yours: other owners' keys cannot process or delete it (admins can)."""
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"upload of {declared} bytes is larger than {limit} bytes "
                              "(TASKGATE_MAX_UPLOAD_BYTES)")
    meta = await save_stream(settings.data_dir, request.stream(), limit, filename,
                             request.headers.get("content-type"), caller.owner)
    return StoredFile.model_validate(meta)


async def delete_file(file_id: FileId, settings: SettingsDep, caller: CallerDep) -> None:
    """Remove the upload from disk; 404 for an unknown id or another owner's file."""
    if await owned_meta(settings.data_dir, file_id, caller) is None \
            or not await delete(settings.data_dir, file_id):
        raise HTTPException(404, no_file(file_id))


def no_file(file_id: str) -> str:
    """The 404 message for a file id that is unknown, or another owner's."""
    return f"no uploaded file {file_id}: upload it with POST /files"


def build_router(route_class: type[TaskgateRoute]) -> APIRouter:
    """These routes, on a router of ``route_class`` routes that cap no body (uploads have their
    own cap, TASKGATE_MAX_UPLOAD_BYTES)."""
    uploads = type("UploadRoute", (route_class,), {"caps_body": True})
    router = APIRouter(prefix="/files", tags=["files"], responses=errors(401), route_class=uploads)
    router.post("", status_code=201, summary="Upload a file", responses=errors(413, 422))(upload_file)
    router.delete("/{file_id}", status_code=204, summary="Delete an uploaded file",
                  responses=errors(404, 422))(delete_file)
    return router
