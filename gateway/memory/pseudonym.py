"""Tenant-scoped pseudonyms of patients: OpenBao transit HMAC under ``sovereign-pseudonym``.

Input: ``tenant + "\\x00" + field + ":" + canonical value``, where field is the first present
of the context's ``kvnr``, ``customer_id``, ``email`` (gateway/phi/context.py PatientContext;
the KVNR upper-cased by its validator, the customer id as sent, the e-mail address lower-cased).
The tenant in the input makes the same patient's pseudonyms of two tenants unrelated; within a
tenant it is stable, so every row of one patient carries the same pseudonym and erasure and
export find them all. Without the HMAC key (only OpenBao has it) a pseudonym cannot be
computed from an identifier, nor reversed.

Stored: the hex of the HMAC (the ``vault:vN:`` prefix stripped, its N kept as the key version,
so a rotation of the key is visible: rows under an older version need that version's pseudonym,
which transit computes with ``key_version``; docs/memory.md). Fails closed: OpenBao unreachable,
a refusal or no key raise KeyUnavailable (503 key_unavailable), and nothing is stored.
"""

from __future__ import annotations

import base64
import re

from gateway.kms import KeyProvider, KeyUnavailable
from gateway.memory.store import Pseudonym
from gateway.phi.context import PatientContext

KEY_NAME = "sovereign-pseudonym"
#: the identifying fields a pseudonym is derived from, first present wins
FIELDS = ("kvnr", "customer_id", "email")
_HMAC = re.compile(r"vault:v(\d+):([A-Za-z0-9+/=]+)")


class NoIdentifier(ValueError):
    """The context names none of FIELDS: no pseudonym can be derived."""


def pseudonym_inputs(tenant: str, context: PatientContext) -> list[bytes]:
    """The HMAC inputs of every identifier the context names, in FIELDS order (NoIdentifier
    when it names none)."""
    found = []
    for field in FIELDS:
        value = getattr(context, field)
        if value:
            canonical = value.strip().lower() if field == "email" else value.strip()
            found.append(f"{tenant}\x00{field}:{canonical}".encode())
    if not found:
        raise NoIdentifier(
            "sovereign.context: name the patient by kvnr, customer_id or email (one of them is "
            "needed to find the patient's stored data)"
        )
    return found


def pseudonym_input(tenant: str, context: PatientContext) -> bytes:
    """The input of the pseudonym a row is stored under: the first identifier present."""
    return pseudonym_inputs(tenant, context)[0]


async def _hmac(keys: KeyProvider, key_name: str, data: bytes) -> Pseudonym:
    answer = await keys.transit_hmac(key_name, data, "a patient's pseudonym")
    m = _HMAC.fullmatch(answer)
    if m is None:
        raise KeyUnavailable("OpenBao answered the pseudonym HMAC in an unknown form")
    return Pseudonym(hex=base64.b64decode(m.group(2)).hex(), version=int(m.group(1)))


async def pseudonym(
    keys: KeyProvider, tenant: str, context: PatientContext, key_name: str = KEY_NAME
) -> Pseudonym:
    """The pseudonym the patient's rows are stored and searched under in *tenant*: that of the
    first identifier present (KeyUnavailable when OpenBao cannot give it)."""
    return await _hmac(keys, key_name, pseudonym_input(tenant, context))


async def pseudonyms(
    keys: KeyProvider, tenant: str, context: PatientContext, key_name: str = KEY_NAME
) -> list[Pseudonym]:
    """The pseudonyms of every identifier the context names: what an erasure or an export
    covers. A row carries the pseudonym of the first identifier *its* request named, so a
    patient stored once by e-mail alone and once by KVNR and e-mail has rows under two
    pseudonyms; a request naming both finds both."""
    return [await _hmac(keys, key_name, data) for data in pseudonym_inputs(tenant, context)]


#: the memory key's HMAC input: a patient's input starts with the tenant name ([a-z0-9-]), this
#: with \x01, so no pseudonym is ever a memory key or the other way round
MEMORY_KEY_INPUT = b"\x01sovereign-memory-key\x00"


async def memory_key(keys: KeyProvider, tenant: str, key_name: str = KEY_NAME) -> bytes:
    """The tenant's memory key: what embedded and stored text is tokenised with and what stored
    originals are sealed with (gateway/memory/store.py seal). Derived in OpenBao from the
    pseudonym key (KeyProvider.hmac_key), not the tenant's data key: a data key is made per
    gateway process (each pod keeps its own wrapped copy) and rotated by `sovereign gateway
    tenant-key rotate`, while a stored item must be readable, and its tokens matched, by every
    pod of the region, before and after such a rotation (KeyUnavailable when OpenBao cannot)."""
    return await keys.hmac_key(key_name, MEMORY_KEY_INPUT + tenant.encode(), "the memory key of a tenant")
