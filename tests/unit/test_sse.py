from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.sse import EventTooLarge, SSEDecoder

STREAM = (
    b": keep-alive comment\n\n"
    b'data: {"a": 1}\n\n'
    b"event: ignored\r\ndata: line one\r\ndata:line two\r\n\r\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [b'{"a": 1}', b"line one\nline two", b"[DONE]"]


def test_whole_stream() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(STREAM) == EXPECTED
    assert not decoder.pending


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    decoder = SSEDecoder()
    events: list[bytes] = []
    bounds = [0, *sorted(cuts), len(STREAM)]
    for start, end in itertools.pairwise(bounds):
        events.extend(decoder.feed(STREAM[start:end]))
    assert events == EXPECTED


def test_every_single_split_point() -> None:
    for cut in range(len(STREAM) + 1):
        decoder = SSEDecoder()
        assert decoder.feed(STREAM[:cut]) + decoder.feed(STREAM[cut:]) == EXPECTED


def test_unfinished_event_is_pending() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"half": ') == []
    assert decoder.pending


def test_a_line_without_newline_is_refused_past_the_bound_instead_of_growing() -> None:
    decoder = SSEDecoder(max_event_bytes=1024)
    decoder.feed(b"data: " + b"x" * 1000)  # within the bound: held
    with pytest.raises(EventTooLarge):
        decoder.feed(b"x" * 100)


def test_an_event_of_many_short_data_lines_is_refused_past_the_bound() -> None:
    decoder = SSEDecoder(max_event_bytes=1024)
    with pytest.raises(EventTooLarge):
        for _ in range(200):
            decoder.feed(b"data: 0123456789\n")  # no blank line: the event never ends


def test_events_within_the_bound_pass_however_many() -> None:
    decoder = SSEDecoder(max_event_bytes=64)
    events = decoder.feed(b"data: 0123456789\n\n" * 1000)
    assert len(events) == 1000 and not decoder.pending


def test_events_completed_before_an_oversized_line_are_handed_over_with_the_error() -> None:
    decoder = SSEDecoder(max_event_bytes=64)
    with pytest.raises(EventTooLarge) as too_large:
        decoder.feed(b"data: one\n\ndata: two\n\n" + b"x" * 100)
    assert too_large.value.events == [b"one", b"two"]
