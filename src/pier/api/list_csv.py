"""Parcelvoy's CSV import of a static list's members (contract §8, docs/lists.md): a CSV body
(text/csv, or the first file of a multipart form, as Parcelvoy's UI uploads it) becomes one
all-or-nothing Sequence of identify commands whose users join the list in the same transaction.

Each row is checked as an identify body (validation.problems_identify, the same rules as
POST /api/client/identify), its created_at as a time (params.time_text); a problem is reported
at /rows/{row}/{column}, a row numbered by the line of the file it starts on (the header's is
1)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncGenerator
from typing import Any

import msgspec
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from ..clock import now_ms
from ..domain.commands import Identify, Sequence, Single
from . import ingest, params, schemas, validation
from .body import read_body
from .errors import HTTPProblem, Problem, invalid

CSV_TYPES = ("text/csv", "application/csv")
MULTIPART = "multipart/form-data"
PROFILE_COLUMNS = ("external_id", "email", "phone", "timezone", "locale")
CREATED_AT = "created_at"  # when a user the import creates was created (docs/lists.md)
DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # a date alone: that day's 00:00 UTC
MAX_ROWS = 10_000  # users in one import: one transaction of the writer


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def is_csv(request: Request) -> bool:
    return media_type(request) in (*CSV_TYPES, MULTIPART)


async def csv_text(request: Request) -> bytes:
    """The CSV bytes of the body: all of it (text/csv), or the first file of a multipart form
    whatever its field's name (as Parcelvoy reads it). Size: the max_body setting, as any body."""
    raw = await read_body(request, any_type=True)
    if media_type(request) != MULTIPART:
        return raw

    async def stream() -> AsyncGenerator[bytes, None]:
        yield raw

    parser = MultiPartParser(request.headers, stream(), max_files=1, max_part_size=len(raw) + 1)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise HTTPProblem(400, f"The multipart body cannot be read: {exc}.") from exc
    try:
        for _, value in form.multi_items():
            if isinstance(value, UploadFile):
                return await value.read()
    finally:
        await form.close()
    raise invalid([Problem("", "the form has no file: upload the CSV as a file field")])


def sequence(raw: bytes, project_id: int, list_id: int) -> Sequence:
    """The import as one Sequence (see the module's doc); 422 listing every problem."""
    try:
        text = raw.decode("utf-8-sig")  # a byte order mark, as spreadsheets write, is skipped
    except UnicodeDecodeError as exc:
        raise invalid([Problem("", f"the CSV is not UTF-8 text (byte {exc.start})")]) from exc
    records: list[tuple[int, list[str]]] = []  # (the line the record starts on, its fields)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        start = 1
        for record in reader:
            if record:  # an empty line is skipped
                records.append((start, record))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise invalid([Problem("", f"the CSV cannot be read: {exc} (line {start})")]) from exc
    if not records:
        raise invalid([Problem("/rows/1", "the CSV is empty: the first row names the columns")])
    (_, header), rows = records[0], records[1:]
    out: list[Problem] = _header_problems(header)
    if not rows:
        out.append(Problem("/rows/2", "the CSV has no rows after its header"))
    if len(rows) > MAX_ROWS:
        message = f"at most {MAX_ROWS:,} users in one import: split the file"
        out.append(Problem(f"/rows/{rows[MAX_ROWS][0]}", message))
    if out:
        raise invalid(out)
    commands: list[Single] = []
    now = now_ms()
    for number, row in rows:
        cmd = _identify(row, header, number, project_id, now, out)
        if cmd is not None:
            commands.append(cmd)
    if out:
        raise invalid(out)
    return Sequence(project_id=project_id, commands=commands, join_list=list_id)


def _header_problems(header: list[str]) -> list[Problem]:
    out = []
    seen: set[str] = set()
    for i, name in enumerate(header, start=1):
        if not name:
            out.append(Problem(f"/rows/1/{i}", f"column {i} has no name"))
        elif name in seen:
            where = validation.pointer("/rows/1", name)
            out.append(Problem(where, f"column {name!r} appears twice"))
        seen.add(name)
    if "external_id" not in header:
        out.append(Problem("/rows/1", "the CSV needs an external_id column"))
    return out


def _identify(
    row: list[str], header: list[str], number: int, project_id: int, now: int, out: list[Problem]
) -> Identify | None:
    """One row as identify: the profile columns as its fields, created_at as the time a user
    it creates was created, the others as traits (data); an empty cell leaves that field or
    trait as it is (and a new user's created_at now)."""
    base = f"/rows/{number}"
    if len(row) != len(header):
        message = f"row {number} has {len(row)} fields, the header {len(header)}"
        out.append(Problem(base, message))
        return None
    body: dict[str, Any] = {}
    data: dict[str, str] = {}
    created_at: int | None = None
    for name, cell in zip(header, row, strict=True):
        if name in PROFILE_COLUMNS:
            body[name] = cell
        elif name == CREATED_AT:
            created_at = _created_at(cell, base, number, now, out)
        elif cell:
            data[name] = cell
    body = {k: v for k, v in body.items() if v or k == "external_id"}
    if data:
        body["data"] = data
    if not body["external_id"]:
        out.append(Problem(f"{base}/external_id", f"row {number}: external_id is empty"))
        return None
    raw = msgspec.json.encode(body)
    try:
        ingest.checked(raw)  # the body rules of every ingestion route (U+0000)
        cmd = schemas.identify(raw, project_id)
        cmd.created_at = created_at
        return cmd
    except HTTPProblem as exc:
        problems = exc.errors or []
    except schemas.Rejected:
        problems = validation.problems_identify(body)
    for p in problems:
        column = p.path.removeprefix("/data")
        out.append(Problem(base + column, f"row {number}, column {column[1:]}: {p.message}"))
    return None


def _created_at(cell: str, base: str, number: int, now: int, out: list[Problem]) -> int | None:
    """A created_at cell in epoch ms, as Parcelvoy's import reads the column (a Date): ISO 8601
    with an offset, or a date alone (that day's 00:00 UTC, as JavaScript reads one), or epoch
    milliseconds; the rules of an event's timestamp (not before 2000, not over a day ahead).
    None when empty, or wrong (its problem added)."""
    text = cell.strip()
    if not text:
        return None
    ms, problem = params.time_text(text + "T00:00:00Z" if DATE.fullmatch(text) else text, now)
    if problem:
        where = f"{base}/{CREATED_AT}"
        out.append(Problem(where, f"row {number}, column {CREATED_AT}: {problem}"))
    return ms
