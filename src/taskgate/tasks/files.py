"""Large files: stream an uploaded file and report its size, sha256, lines and CSV columns."""

from __future__ import annotations

import csv
import hashlib
import io

from pydantic import BaseModel, Field

from ..config import get_settings
from ..declare import task
from ..files import CHUNK, FileId, file_path, read_meta
from ..worker.running import raise_if_cancelled, report_progress


class CsvSummary(BaseModel):
    """Per-column counts of a CSV file (the first row is the header)."""

    columns: list[str]
    rows: int = Field(description="Data rows, header excluded.")
    non_empty: dict[str, int] = Field(description="Per column, how many rows have a value.")


class FileReport(BaseModel):
    """What process_file found."""

    file_id: str
    size: int
    sha256: str
    lines: int
    csv: CsvSummary | None = Field(default=None, description="Set when the upload is CSV.")


class _Counting(io.RawIOBase):
    """A raw reader that hashes, counts bytes and newlines, and reports progress as it reads."""

    def __init__(self, raw: io.FileIO, total: int) -> None:
        self.raw, self.total = raw, total
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.newlines = 0
        self.last_byte = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        raise_if_cancelled()
        count = self.raw.readinto(buffer)
        if count:
            chunk = bytes(buffer[:count])
            self.sha256.update(chunk)
            self.size += count
            self.newlines += chunk.count(b"\n")
            self.last_byte = chunk[-1:]
            report_progress(self.size, self.total, "reading")
        return count


def _is_csv(filename: str | None, content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip() == "text/csv" or \
        (filename or "").lower().endswith(".csv")


def analyse_file(file_id: str) -> FileReport:
    """Read the upload once, in chunks: flat memory whatever its size."""
    settings = get_settings()
    meta = read_meta(settings.data_dir, file_id)
    with file_path(settings.data_dir, file_id).open("rb", buffering=0) as handle:
        counter = _Counting(handle, int(meta["size"]) or 1)
        buffered = io.BufferedReader(counter, buffer_size=CHUNK)
        summary = None
        if _is_csv(meta.get("filename"), meta.get("content_type")):
            text = io.TextIOWrapper(buffered, encoding="utf-8", errors="replace", newline="")
            reader = csv.reader(text)
            columns = next(reader, [])
            filled = [0] * len(columns)
            rows = 0
            for row in reader:
                rows += 1
                for index, value in enumerate(row[: len(columns)]):
                    if value:
                        filled[index] += 1
            summary = CsvSummary(columns=columns, rows=rows,
                                 non_empty=dict(zip(columns, filled, strict=True)))
        else:
            while buffered.read(CHUNK):
                pass
    lines = counter.newlines + (1 if counter.size and counter.last_byte != b"\n" else 0)
    return FileReport(file_id=file_id, size=counter.size, sha256=counter.sha256.hexdigest(), lines=lines,
                      csv=summary)


@task
def process_file(file_id: FileId) -> FileReport:
    """Stream an uploaded file: size, sha256, line count, and per-column counts for CSV."""
    return analyse_file(file_id)
