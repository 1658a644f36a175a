"""Laws of the SSE decoder: how bytes are split never changes the events."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from onion.providers._sse import SSEDecoder

payloads = st.lists(
    st.tuples(
        st.one_of(st.none(), st.sampled_from(["message_start", "content_block_delta", "ping"])),
        st.binary(max_size=40).filter(lambda b: b"\n" not in b and b"\r" not in b),
    ),
    max_size=12,
)


def encode(events: list[tuple[str | None, bytes]], newline: bytes) -> bytes:
    out = b": comment to skip" + newline + newline
    for name, data in events:
        if name is not None:
            out += b"event: " + name.encode() + newline
        out += b"data: " + data + newline + newline
    return out


@settings(max_examples=80, deadline=None)
@given(payloads, st.sampled_from([b"\n", b"\r\n"]), st.lists(st.integers(0, 400), max_size=8))
def test_splitting_the_bytes_never_changes_the_events(
    events: list[tuple[str | None, bytes]], newline: bytes, cuts: list[int]
) -> None:
    raw = encode(events, newline)
    points = sorted({min(c, len(raw)) for c in cuts})
    pieces = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    decoder = SSEDecoder()
    seen = [event for piece in pieces for event in decoder.feed(piece)]
    # "data: " loses exactly one space, so data that starts with spaces keeps the rest.
    assert seen == events


def test_multi_line_data_joins_with_newlines_and_unfinished_events_wait() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\ndata: b\n") == []
    assert decoder.feed(b"\ndata:c\n\n") == [(None, b"a\nb"), (None, b"c")]
    assert decoder.feed(b"data: [DONE]") == []
    assert decoder.feed(b"\n\n") == [(None, b"[DONE]")]
