"""Restoration cost against answer size (#20 finding 9): an echoed answer of n and 4n tokens
(half names, half FF1 phone numbers), plain and streamed in 3-character pieces; the ratio
should be about 4 (linear), not 16 or 64.

    python -m benchmarks.restore
"""

from __future__ import annotations

import os
import time

from gateway.phi.tokenise import StreamRestorer, Tokeniser, TokenMap, restore


def answer(n: int) -> tuple[str, dict[str, str]]:
    tok, tokens = Tokeniser(os.urandom(32), "bench"), TokenMap()
    parts = [
        tok.token_for(
            f"+49 30 {1000000 + i}" if i % 2 else f"Name{i}", "PHONE" if i % 2 else "NAME", False, tokens
        )
        for i in range(n)
    ]
    return " und ".join(parts), tokens.originals


def timed(fn: object, *args: object) -> float:
    t0 = time.perf_counter()
    fn(*args)  # type: ignore[operator]
    return time.perf_counter() - t0


def streamed(text: str, originals: dict[str, str]) -> None:
    r = StreamRestorer(originals)
    for i in range(0, len(text), 3):
        r.feed(text[i : i + 3])
    r.flush()


def main() -> None:
    for n in (2000, 8000):
        text, originals = answer(n)
        print(f"n={n}: plain {timed(restore, text, originals) * 1000:.1f} ms, "
              f"streamed {timed(streamed, text, originals) * 1000:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
