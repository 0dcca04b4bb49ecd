"""FF1 (NIST SP 800-38G) against the NIST sample vectors, and our format-preserving use."""

from __future__ import annotations

import os

import pytest
from fastfpe import ff1
from hypothesis import given
from hypothesis import strategies as st

from gateway.phi.tokenise import Tokeniser

K128 = "2B7E151628AED2A6ABF7158809CF4F3C"
K192 = K128 + "EF4359D8D580AA4F"
K256 = K192 + "7F036D6F04FC6A94"
DEC = "0123456789"
B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
T1 = "39383736353433323130"
T2 = "3737373770717273373737"

# FF1 samples 1-9 (NIST, "FF1samples.pdf")
NIST = [
    (K128, "", DEC, "0123456789", "2433477484"),
    (K128, T1, DEC, "0123456789", "6124200773"),
    (K128, T2, B36, "0123456789abcdefghi", "a9tv40mll9kdu509eum"),
    (K192, "", DEC, "0123456789", "2830668132"),
    (K192, T1, DEC, "0123456789", "2496655549"),
    (K192, T2, B36, "0123456789abcdefghi", "xbj3kv35jrawxv32ysr"),
    (K256, "", DEC, "0123456789", "6657667009"),
    (K256, T1, DEC, "0123456789", "1001623463"),
    (K256, T2, B36, "0123456789abcdefghi", "xs8a0azh2avyalyzuwd"),
]


@pytest.mark.parametrize(("key", "tweak", "alphabet", "plaintext", "ciphertext"), NIST)
def test_nist_sample_vectors(key: str, tweak: str, alphabet: str, plaintext: str, ciphertext: str) -> None:
    assert ff1.encrypt(key.lower(), tweak, alphabet, plaintext) == ciphertext
    assert ff1.decrypt(key.lower(), tweak, alphabet, ciphertext) == plaintext


TOKENISER = Tokeniser(os.urandom(32), "clinic-a")


@given(st.from_regex(r"\+?[0-9]{2,4}[ \-/]?[0-9]{3,5}[ ]?[0-9]{2,6}", fullmatch=True))
def test_format_preserved_and_reversible(value: str) -> None:
    encrypted = TOKENISER.ff1_encrypt(value, "PHONE")
    assert len(encrypted) == len(value)
    assert [c.isdigit() for c in encrypted] == [c.isdigit() for c in value]
    assert [c for c in encrypted if not c.isdigit()] == [c for c in value if not c.isdigit()]
    assert TOKENISER.ff1_decrypt(encrypted, "PHONE") == value


def test_tweak_separates_categories_and_tenants() -> None:
    other_tenant = Tokeniser(TOKENISER._mac_key, "clinic-b")  # unrelated key and tenant
    value = "A123456780"
    assert TOKENISER.ff1_encrypt(value, "KVNR") != TOKENISER.ff1_encrypt(value, "PHONE")
    assert TOKENISER.ff1_encrypt(value, "KVNR") != other_tenant.ff1_encrypt(value, "KVNR")
    assert TOKENISER.ff1_encrypt(value, "KVNR")[0] == "A"  # letters stay, only digits change
