"""Tokenisation and restoration.

- Identifiers with at least six digits (KVNR, IBAN, phone, customer and order ids): FF1
  (NIST SP 800-38G) over AES-256 on the digits, radix 10, so digits stay digits and letters
  and separators stay where they are; the tweak is ``tenant:category``. FF3-1 is not used
  (withdrawn in the 2025 Rev. 1 draft). FF1 comes from ``fastfpe`` (Rust), validated against
  the NIST sample vectors in tests/unit/test_ff1.py.
- Names, dates, e-mail addresses, addresses, postcodes and short ids: keyed, typed surrogate
  tokens ``[NAME_3f9a2c]`` (HMAC-SHA256 of category and folded value, 24 bits). The same value
  gets the same token for the whole tenant, so a conversation stays coherent; the category
  keeps sentences grammatical. docs/phi-filter.md says why this form.
- Payment cards, and whatever the use case's policy says to remove: ``[CARD_REMOVED]``,
  never restorable, never forwarded.

Restoration works from the per-request map of token -> original value, which lives in
memory for the request only; key rotation does not affect answers in flight.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fastfpe import ff1

from gateway.phi.detect import Span, skeleton

FF1_CATEGORIES = frozenset({"KVNR", "IBAN", "PHONE", "CUSTOMER_ID", "ORDER_ID"})
ALWAYS_REMOVED = frozenset({"CARD"})
FF1_MIN_DIGITS = 6  # radix 10: a domain of at least 10^6, as SP 800-38G requires
SURROGATE_RE = re.compile(r"\[[A-Z_]{2,20}_[0-9a-f]{6}\]")
_DIGITS = "0123456789"


def derive_keys(data_key: bytes) -> tuple[bytes, bytes]:
    """(FF1 key, surrogate HMAC key) from the tenant's data key, by HKDF-SHA256."""
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=b"sovereign-llm phi v1").derive(data_key)
    return okm[:32], okm[32:]


@dataclass
class TokenMap:
    """Token -> original for one request, plus what was done, by category."""

    originals: dict[str, str] = field(default_factory=dict)
    tokenised: Counter[str] = field(default_factory=Counter)
    removed: Counter[str] = field(default_factory=Counter)


class Tokeniser:
    def __init__(self, data_key: bytes, tenant: str) -> None:
        ff1_key, self._mac_key = derive_keys(data_key)
        self._ff1_key = ff1_key.hex()
        self._tenant = tenant
        self._tweaks: dict[str, str] = {}

    def _tweak(self, category: str) -> str:
        tweak = self._tweaks.get(category)
        if tweak is None:
            tweak = self._tweaks[category] = f"{self._tenant}:{category}".encode().hex()
        return tweak

    def ff1_encrypt(self, value: str, category: str) -> str:
        return self._ff1(ff1.encrypt, value, category)

    def ff1_decrypt(self, value: str, category: str) -> str:
        return self._ff1(ff1.decrypt, value, category)

    def _ff1(self, op: Callable[[str, str, str, str], str], value: str, category: str) -> str:
        """Apply FF1 to the digits of *value*; every other character stays where it is."""
        digits = "".join(c for c in value if c in _DIGITS)
        out = iter(op(self._ff1_key, self._tweak(category), _DIGITS, digits))
        return "".join(next(out) if c in _DIGITS else c for c in value)

    def surrogate(self, value: str, category: str) -> str:
        mac = hmac.new(self._mac_key, f"{category}:{skeleton(value)}".encode(), hashlib.sha256)
        return f"[{category}_{mac.hexdigest()[:6]}]"

    def token_for(self, value: str, category: str, remove: bool, tokens: TokenMap) -> str:
        if remove or category in ALWAYS_REMOVED:
            tokens.removed[category] += 1
            return f"[{category}_REMOVED]"
        if category in FF1_CATEGORIES and sum(c in _DIGITS for c in value) >= FF1_MIN_DIGITS:
            token = self.ff1_encrypt(value, category)
        else:
            token = self.surrogate(value, category)
        tokens.tokenised[category] += 1
        tokens.originals.setdefault(token, value)
        return token

    def apply(self, text: str, spans: list[Span], removed: frozenset[str], tokens: TokenMap) -> str:
        """*text* with every span replaced (spans must not overlap; see resolve_overlaps)."""
        out: list[str] = []
        pos = 0
        for span in spans:
            out.append(text[pos : span.start])
            value = span.canonical or text[span.start : span.end]
            remove = span.category in removed or span.source == "dropped"
            out.append(self.token_for(value, span.category, remove, tokens))
            pos = span.end
        out.append(text[pos:])
        return "".join(out)


def _occurrences(text: str, tokens: list[str]) -> list[tuple[int, str]]:
    """Leftmost-longest, non-overlapping occurrences of *tokens* in *text*, in order.

    Plain substring search instead of one regular expression of all tokens: the tokens are
    new for every request, and compiling that expression cost about 0.5 ms a request."""
    present = [t for t in tokens if t in text]
    if not present:
        return []
    found: list[tuple[int, str]] = []
    pos = 0
    while True:
        best: tuple[int, str] | None = None
        for t in present:
            at = text.find(t, pos)
            if at >= 0 and (best is None or at < best[0] or (at == best[0] and len(t) > len(best[1]))):
                best = (at, t)
        if best is None:
            return found
        found.append(best)
        pos = best[0] + len(best[1])


def restore(text: str, originals: dict[str, str]) -> tuple[str, int]:
    """(*text* with every known token replaced by its original, number replaced)."""
    hits = _occurrences(text, list(originals))
    if not hits:
        return text, 0
    out: list[str] = []
    pos = 0
    for at, token in hits:
        out.append(text[pos:at])
        out.append(originals[token])
        pos = at + len(token)
    out.append(text[pos:])
    return "".join(out), len(hits)


def count_unrestored(text: str) -> int:
    """Surrogate-shaped tokens left in restored text: ones the model mangled or invented."""
    return len(SURROGATE_RE.findall(text))


class StreamRestorer:
    """Restores a streamed answer incrementally. It holds back only a tail that could still
    become a token (at most the longest token's length minus one), so text flows on."""

    def __init__(self, originals: dict[str, str]) -> None:
        self._originals = originals
        self._tokens = list(originals)
        self._max = max((len(t) for t in originals), default=0)
        self._prefixes: set[str] | None = None  # built on first need
        self._buffer = ""
        self.restored = 0

    @property
    def held(self) -> int:
        """Characters held back (a possible partial token)."""
        return len(self._buffer)

    def feed(self, chunk: str) -> str:
        if not self._tokens:
            return chunk
        self._buffer += chunk
        return self._drain(final=False)

    def flush(self) -> str:
        if not self._tokens:
            return ""
        return self._drain(final=True)

    def _drain(self, final: bool) -> str:
        buf = self._buffer
        out: list[str] = []
        pos = 0
        for at, token in _occurrences(buf, self._tokens):
            end = at + len(token)
            if not final and end == len(buf) and self._is_proper_prefix(token):
                break  # a longer token may still be arriving
            out.append(buf[pos:at])
            out.append(self._originals[token])
            self.restored += 1
            pos = end
        rest = buf[pos:]
        if final:
            out.append(rest)
            self._buffer = ""
            return "".join(out)
        hold = len(rest)
        for j in range(max(0, len(rest) - self._max + 1), len(rest)):
            if self._is_proper_prefix(rest[j:]):
                hold = j
                break
        out.append(rest[:hold])
        self._buffer = rest[hold:]
        return "".join(out)

    def _is_proper_prefix(self, tail: str) -> bool:
        if self._prefixes is None:
            self._prefixes = {t[:i] for t in self._tokens for i in range(1, len(t))}
        return tail in self._prefixes
