"""Incremental server-sent-events decoder (the ``data`` fields of each event), bounded per event.

Hand-written: the maintained SSE clients are bound to one HTTP library's response object
(httpx-sse to httpx) or to a connection loop of their own; the gateway needs only to cut a
byte stream it already holds into events, whatever sized chunks arrive.
Follows the WHATWG event-stream rules the upstreams use: events end at a blank line,
``data:`` lines of one event are joined with ``\\n``, comment and other fields are ignored.
"""

from __future__ import annotations


class EventTooLarge(ValueError):
    """A line or an event is longer than the decoder's bound; ``events`` holds the data of the
    events the same chunk completed before it."""

    def __init__(self, message: str, events: list[bytes]) -> None:
        super().__init__(message)
        self.events = events


class SSEDecoder:
    """*max_event_bytes* bounds what is held: an unfinished line, and the data of an
    unfinished event; past it, :class:`EventTooLarge` (an upstream sending bytes without a
    newline, or an event without end, would otherwise grow memory without limit)."""

    def __init__(self, max_event_bytes: int = 1 << 20) -> None:
        self._buffer = b""
        self._data: list[bytes] = []
        self._data_bytes = 0
        self._max = max_event_bytes

    def feed(self, chunk: bytes) -> list[bytes]:
        """Return the data of every event completed by *chunk*, in order."""
        self._buffer += chunk
        events: list[bytes] = []
        start = 0
        buffer = self._buffer
        while True:
            cut = buffer.find(b"\n", start)
            if cut < 0:
                self._buffer = buffer[start:]
                if len(self._buffer) > self._max:
                    raise EventTooLarge("a line longer than the bound", events)
                return events
            line = buffer[start:cut].rstrip(b"\r")
            start = cut + 1
            if not line:
                if self._data:
                    events.append(b"\n".join(self._data))
                    self._data, self._data_bytes = [], 0
            elif line.startswith(b"data:"):
                value = line[5:]
                value = value[1:] if value.startswith(b" ") else value
                self._data_bytes += len(value) + 1
                if self._data_bytes > self._max:
                    raise EventTooLarge("an event longer than the bound", events)
                self._data.append(value)

    @property
    def pending(self) -> bool:
        """Bytes or data lines of an unfinished event are buffered."""
        return bool(self._buffer.strip() or self._data)
