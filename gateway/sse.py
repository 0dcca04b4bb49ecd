"""Incremental server-sent-events decoder (the ``data`` fields of each event).

Hand-written: the maintained SSE clients are bound to one HTTP library's response object
(httpx-sse to httpx) or to a connection loop of their own; the gateway needs only to cut a
byte stream it already holds into events, whatever sized chunks arrive.
Follows the WHATWG event-stream rules the upstreams use: events end at a blank line,
``data:`` lines of one event are joined with ``\\n``, comment and other fields are ignored.
"""

from __future__ import annotations


class SSEDecoder:
    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        """Return the data of every event completed by *chunk*, in order."""
        self._buffer += chunk
        events: list[bytes] = []
        while True:
            cut = self._buffer.find(b"\n")
            if cut < 0:
                return events
            line = self._buffer[:cut].rstrip(b"\r")
            self._buffer = self._buffer[cut + 1 :]
            if not line:
                if self._data:
                    events.append(b"\n".join(self._data))
                    self._data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(b" ") else value)

    @property
    def pending(self) -> bool:
        """Bytes or data lines of an unfinished event are buffered."""
        return bool(self._buffer.strip() or self._data)
