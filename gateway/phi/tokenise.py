"""Tokenisation and restoration: FF1 and surrogate tokens under a per-request key, answers
restored in linear time, streamed answers as they arrive.

- Identifiers with at least six digits (KVNR, IBAN, phone, customer and order ids): FF1
  (NIST SP 800-38G) over AES-256 on the digits, radix 10, so digits stay digits and letters
  and separators stay where they are; the tweak is ``tenant:category``. FF3-1 is not used
  (withdrawn in the 2025 Rev. 1 draft). FF1 comes from ``fastfpe`` (Rust), validated against
  the NIST sample vectors in tests/unit/test_ff1.py.
- Before a token is computed, a date is read as an ISO date and a phone number written in
  E.164 form, so that one value gets one token however it is spelled within a request.
- Names, dates, e-mail addresses, addresses, postcodes and short ids: keyed, typed surrogate
  tokens ``[NAME_3f9a2c]`` (HMAC-SHA256 of category and folded value, 24 bits). The same value
  gets the same token for the whole tenant, so a conversation stays coherent; the category
  keeps sentences grammatical. docs/phi-filter.md says why this form.
- Payment cards, and whatever the use case's policy says to remove: ``[CARD_REMOVED]``,
  never restorable, never forwarded.

Restoration works from the per-request map of token -> original value, which lives in
memory for the request only; key rotation does not affect answers in flight. The gateway
tokenises each request with its own key (:func:`request_key`), so tokens are unlinkable
across requests; restoration is one linear pass (:class:`TokenScanner`).
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import re
import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fastfpe import ff1

from gateway.phi.detect import Span
from gateway.phi.fold import skeleton

FF1_CATEGORIES = frozenset({"KVNR", "IBAN", "PHONE", "CUSTOMER_ID", "ORDER_ID"})
ALWAYS_REMOVED = frozenset({"CARD"})
FF1_MIN_DIGITS = 6  # radix 10: a domain of at least 10^6, as SP 800-38G requires
SURROGATE_RE = re.compile(r"\[[A-Z_]{2,20}_[0-9a-f]{6}\]")
_DIGITS = "0123456789"


def request_key(data_key: bytes) -> bytes:
    """A key for one gateway request: HKDF of the tenant's data key with 32 random bytes.

    Tokens made with it mean nothing outside that request, so a token seen anywhere else (a
    log, an export, an earlier answer) can never be reproduced, confirmed or restored by a
    later request (docs/phi-filter.md, "Token confirmation")."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=secrets.token_bytes(32), info=b"sovereign-llm request v1"
    ).derive(data_key)


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
    #: one token per value within this map: a token another value already holds is passed over
    #: for the value's next one (Tokeniser.token_for). Only for tokens of one request (a
    #: request key): tenant-keyed tokens must come out the same in every request.
    distinct: bool = False
    #: token -> a digest of the value it stands for (with *distinct*)
    holders: dict[str, str] = field(default_factory=dict)


_NUMERIC_DATE = re.compile(r"(\d{1,4})([./-])(\d{1,2})\2(\d{2}|\d{4})")
_DAY_MONTH_YEAR = re.compile(r"(\d{1,2})\.?\s+([^\W\d_]+)\.?,?\s+(\d{4})")
_MONTH_DAY_YEAR = re.compile(r"([^\W\d_]+)\.?\s+(\d{1,2})(?:st|nd|rd|th)?\.?,?\s+(\d{4})")
_MONTH_STEMS = {"jan": 1, "feb": 2, "mär": 3, "mae": 3, "mar": 3, "apr": 4, "mai": 5, "may": 5,
                "jun": 6, "jul": 7, "aug": 8, "sep": 9, "okt": 10, "oct": 10, "nov": 11, "dez": 12,
                "dec": 12}  # fmt: skip


def canonical_date(value: str) -> str | None:
    """*value* as an ISO date (``1968-03-14``) when it reads as one: ``14.03.1968``,
    ``14.3.68``, ``1968-03-14``, ``03/14/1968`` (day first when the first number is over 12),
    ``14. März 1968``, ``March 14, 1968``, ``14 Mar 1968``; None otherwise. Two-digit years
    up to this year's are 20xx, the others 19xx."""
    text = value.strip()
    parts: tuple[int, int, int] | None = None  # year, month, day
    if m := _NUMERIC_DATE.fullmatch(text):
        a, sep, b, c = m.groups()
        if len(a) == 4:
            parts = int(a), int(b), int(c)
        elif len(a) <= 2:
            first, second = int(a), int(b)
            if sep == "/" and first <= 12:
                first, second = second, first  # US month/day/year
            year = int(c)
            if len(c) == 2:
                year += 2000 if year <= date.today().year % 100 else 1900
            parts = year, second, first
    elif m := _DAY_MONTH_YEAR.fullmatch(text):
        month = _MONTH_STEMS.get(m.group(2)[:3].lower())
        parts = (int(m.group(3)), month, int(m.group(1))) if month else None
    elif m := _MONTH_DAY_YEAR.fullmatch(text):
        month = _MONTH_STEMS.get(m.group(1)[:3].lower())
        parts = (int(m.group(3)), month, int(m.group(2))) if month else None
    if parts is None:
        return None
    try:
        return date(*parts).isoformat()
    except ValueError:
        return None


def canonical_phone(value: str) -> str:
    """*value* in E.164 form where it can be: ``+49 (0)30 1234567``, ``0049 30 1234567`` and
    ``030 1234567`` are all ``+49301234567`` (a national number is taken as German, like the
    detector's national forms); a number without prefix stays its digits."""
    text = value.strip().replace("(0)", "")
    digits = "".join(c for c in text if c in _DIGITS)
    if text.startswith("+"):
        return "+" + digits
    if digits.startswith("00"):
        return "+" + digits[2:]
    if digits.startswith("0"):
        return "+49" + digits[1:]
    return digits


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

    def ff1_encrypt(self, value: str, category: str, attempt: int = 0) -> str:
        return self._ff1(ff1.encrypt, value, category, attempt)

    def ff1_decrypt(self, value: str, category: str, attempt: int = 0) -> str:
        return self._ff1(ff1.decrypt, value, category, attempt)

    def _ff1(self, op: Callable[[str, str, str, str], str], value: str, category: str, attempt: int) -> str:
        """Apply FF1 to the digits of *value*; every other character stays where it is. *attempt*
        > 0: another tweak (a token of this request another value holds, token_for)."""
        digits = "".join(c for c in value if c in _DIGITS)
        tweak = self._tweak(category) if not attempt else self._tweak(f"{category}:{attempt}")
        out = iter(op(self._ff1_key, tweak, _DIGITS, digits))
        return "".join(next(out) if c in _DIGITS else c for c in value)

    def surrogate(self, value: str, category: str, attempt: int = 0) -> str:
        mac = hmac.new(self._mac_key, self._identity(value, category, attempt).encode(), hashlib.sha256)
        return f"[{category}_{mac.hexdigest()[:6]}]"

    @staticmethod
    def _identity(value: str, category: str, attempt: int = 0) -> str:
        base = f"{category}:{skeleton(value)}"
        return base if not attempt else f"{base}:{attempt}"

    def _distinct(self, keyed: str, category: str, ff1_token: bool, tokens: TokenMap) -> str:
        """The value's token, or its next one while another value of the map holds it. Six hex
        digits of a surrogate collide (two of a request's values share one with a probability of
        about n²/2²⁵), and FF1 is a permutation within one category only (a six-digit customer
        id and order id share a token with about 10⁻⁶): the answer's token would be restored
        as the other value, another patient's. The same value, however spelled, finds its own."""
        holder = hmac.new(self._mac_key, self._identity(keyed, category).encode(), hashlib.sha256).hexdigest()
        for attempt in range(64):
            if ff1_token:
                token = self.ff1_encrypt(keyed, category, attempt)
            elif attempt:
                token = self.surrogate(keyed, category, attempt)
            else:  # the surrogate is the first six digits of the HMAC just made
                token = f"[{category}_{holder[:6]}]"
            if tokens.holders.setdefault(token, holder) == holder:
                return token
        raise RuntimeError("no free token after 64 tries")  # 64 collisions in a row: never in practice

    def token_for(self, value: str, category: str, remove: bool, tokens: TokenMap) -> str:
        if remove or category in ALWAYS_REMOVED:
            tokens.removed[category] += 1
            return f"[{category}_REMOVED]"
        # one value, one token, however it is written: dates as ISO, phones as E.164
        if category == "DATE":
            keyed = canonical_date(value) or value
        elif category == "PHONE":
            keyed = canonical_phone(value)
        else:
            keyed = value
        ff1_token = category in FF1_CATEGORIES and sum(c in _DIGITS for c in keyed) >= FF1_MIN_DIGITS
        if tokens.distinct:
            token = self._distinct(keyed, category, ff1_token, tokens)
        elif ff1_token:
            token = self.ff1_encrypt(keyed, category)
        else:
            token = self.surrogate(keyed, category)
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


class TokenScanner:
    """Finds this request's tokens in a text in one pass: linear in the text's length,
    whatever the number of tokens (the old search was quadratic in the tokens found times
    the tokens known, an echoed answer of 2,000 tokens took seconds).

    Surrogates: one compiled expression of the surrogate shape, each match looked up in a dict
    (an unknown one is left alone). FF1 tokens (formatted numbers): a dict from the first
    ``m`` characters (``m``: the shortest FF1 token, at least 6) to the tokens that start so,
    tried at each position where an FF1 token's first character stands. Semantics: the
    leftmost occurrence first, the longest at one position, never overlapping."""

    def __init__(self, originals: dict[str, str]) -> None:
        self.originals = originals
        self.surrogates = frozenset(t for t in originals if SURROGATE_RE.fullmatch(t))
        ff1 = [t for t in originals if t not in self.surrogates]
        self.max_len = max((len(t) for t in originals), default=0)
        self._m = min((len(t) for t in ff1), default=0)
        self._buckets: dict[str, list[str]] = {}
        for t in sorted(ff1, key=len, reverse=True):
            self._buckets.setdefault(t[: self._m], []).append(t)
        firsts = {t[0] for t in originals}
        self._first_chars = frozenset(firsts)
        self._ff1_start = (
            re.compile("[" + "".join(re.escape(c) for c in sorted({t[0] for t in ff1})) + "]")
            if ff1
            else None
        )

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, token) of every occurrence, leftmost-longest, non-overlapping, in order."""
        if not self.originals:
            return []
        candidates: list[tuple[int, int, str]] = []
        if self.surrogates and "[" in text:
            known = self.surrogates
            candidates = [
                (m.start(), m.end(), m.group()) for m in SURROGATE_RE.finditer(text) if m.group() in known
            ]
        if self._ff1_start is not None:
            ff1: list[tuple[int, int, str]] = []
            m, buckets = self._m, self._buckets
            for hit in self._ff1_start.finditer(text):
                i = hit.start()
                bucket = buckets.get(text[i : i + m])
                if bucket:
                    for t in bucket:  # longest first
                        if text.startswith(t, i):
                            ff1.append((i, i + len(t), t))
                            break
            if ff1:
                # both lists are ordered by start; at one start the longer wins
                candidates = list(heapq.merge(candidates, ff1, key=lambda c: (c[0], c[0] - c[1])))
        found: list[tuple[int, int, str]] = []
        pos = 0
        for start, end, token in candidates:
            if start >= pos:
                found.append((start, end, token))
                pos = end
        return found

    def could_start_token(self, char: str) -> bool:
        return char in self._first_chars


def restore(text: str, originals: dict[str, str], scanner: TokenScanner | None = None) -> tuple[str, int]:
    """(*text* with every known token replaced by its original, number replaced); linear in
    the text's length."""
    hits = (scanner or TokenScanner(originals)).find(text)
    if not hits:
        return text, 0
    out: list[str] = []
    pos = 0
    for start, end, token in hits:
        out.append(text[pos:start])
        out.append(originals[token])
        pos = end
    out.append(text[pos:])
    return "".join(out), len(hits)


def count_unrestored(text: str) -> int:
    """Surrogate-shaped tokens left in restored text: ones the model mangled or invented."""
    return len(SURROGATE_RE.findall(text))


class StreamRestorer:
    """Restores a streamed answer incrementally. It holds back only a tail that could still
    become a token (at most the longest token's length minus one), so text flows on. Each
    character is scanned at most twice (once when it arrives, once more if held back), so a
    whole stream costs time linear in its length."""

    def __init__(self, originals: dict[str, str], scanner: TokenScanner | None = None) -> None:
        self._originals = originals
        self._scanner = scanner or TokenScanner(originals)
        self._max = self._scanner.max_len
        self._prefixes: set[str] | None = None  # built on first need
        self._buffer = ""
        self.restored = 0

    @property
    def held(self) -> int:
        """Characters held back (a possible partial token)."""
        return len(self._buffer)

    def feed(self, chunk: str) -> str:
        if not self._originals:
            return chunk
        self._buffer += chunk
        return self._drain(final=False)

    def flush(self) -> str:
        if not self._originals:
            return ""
        return self._drain(final=True)

    def _hold_from(self, buf: str) -> int:
        """The earliest position from which the rest of *buf* could still grow into a token
        (a proper prefix of one), or len(buf)."""
        for j in range(max(0, len(buf) - self._max + 1), len(buf)):
            if self._scanner.could_start_token(buf[j]) and self._is_proper_prefix(buf[j:]):
                return j
        return len(buf)

    def _drain(self, final: bool) -> str:
        buf = self._buffer
        hold = len(buf) if final else self._hold_from(buf)
        hits = self._scanner.find(buf)
        ready = len(hits)
        while ready and hits[ready - 1][0] >= hold:
            ready -= 1  # a longer token may still be arriving there
        del hits[ready:]
        keep = max(hits[-1][1] if hits else 0, hold)
        self._buffer = buf[keep:]
        return self._splice(buf, hits, keep)

    def _splice(self, buf: str, hits: list[tuple[int, int, str]], end: int) -> str:
        """``buf[:end]`` with the *hits* (all within it) replaced by their originals."""
        out: list[str] = []
        pos = 0
        for start, stop, token in hits:
            out.append(buf[pos:start])
            out.append(self._originals[token])
            pos = stop
        out.append(buf[pos:end])
        self.restored += len(hits)
        return "".join(out)

    def _is_proper_prefix(self, tail: str) -> bool:
        if self._prefixes is None:
            self._prefixes = {t[:i] for t in self._originals for i in range(1, len(t))}
        return tail in self._prefixes
