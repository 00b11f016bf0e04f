"""Streamed CSV and JSON Lines exports, shared by the API and the auditor pages.

Both serve the same bytes for the same filters, so an auditor's download
from the web page matches what a script gets from the API.
"""

from __future__ import annotations

import csv
import io
import json

from flask import Response, stream_with_context

from server import serialize

EXPORT_BATCH = 1000


def stream_rows(database, query, key_column, to_json):
    """Yield the JSON records of ``query`` in key order, a batch at a time.

    The rows are read on a session of their own, opened when the response
    starts streaming, so an export of a million rows never keeps them all in memory.
    """

    def generate():
        last = None
        with database.read() as session:
            while True:
                page = query if last is None else query.where(key_column > last)
                rows = session.execute(page.order_by(key_column).limit(EXPORT_BATCH)).scalars().all()
                if not rows:
                    return
                for row in rows:
                    yield to_json(row)
                last = getattr(rows[-1], key_column.key)
                session.expunge_all()

    return generate()


def export_response(records, output: str, columns, name: str) -> Response:
    """Return a streamed download of ``records`` as ``output`` ("csv" or "jsonl")."""
    if output == "jsonl":
        body = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n" for record in records)
        mimetype = "application/x-ndjson"
    else:
        body = _csv_lines(records, columns)
        mimetype = "text/csv"
    return Response(
        stream_with_context(body), mimetype=mimetype,
        headers={"Content-Disposition": f'attachment; filename="sshca-{name}.{output}"'},
    )


def _csv_lines(records, columns):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for record in records:
        writer.writerow(serialize.csv_row(record, columns))
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    # With no records, the header row is still in the buffer.
    if buffer.getvalue():
        yield buffer.getvalue()
