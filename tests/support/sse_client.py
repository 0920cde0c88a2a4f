"""An independent Server-Sent Events client for tests/sse_clients.rs:
httpx-sse on httpx, at their defaults (connect_sse sends Accept:
text/event-stream; the events are parsed by httpx-sse's decoder).

    sse_client.py URL STOP [LAST_EVENT_ID]

Prints one JSON line {"status": N, "headers": {...}} (names lowercased), then
one JSON line per event httpx-sse yields: {"event", "data", "id", "retry"}.
Exits 0 after an event whose data or event name is STOP, or when the
stream ends (then the last line is {"end": true}). With LAST_EVENT_ID the
request carries it as Last-Event-ID, as EventSource does on a reconnect.
"""
import json
import sys

import httpx
from httpx_sse import connect_sse


def out(obj):
    print(json.dumps(obj), flush=True)


def main(url, stop, last_event_id=None):
    headers = {}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    # No read timeout: the test bounds the run, and a quiet stream is normal.
    with httpx.Client(timeout=httpx.Timeout(10.0, read=None)) as client:
        with connect_sse(client, "GET", url, headers=headers) as source:
            response = source.response
            out({"status": response.status_code,
                 "headers": {k.lower(): v for k, v in response.headers.items()}})
            for sse in source.iter_sse():
                out({"event": sse.event, "data": sse.data, "id": sse.id, "retry": sse.retry})
                if stop in (sse.data, sse.event):
                    return
    out({"end": True})


if __name__ == "__main__":
    main(*sys.argv[1:])
