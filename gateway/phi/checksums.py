"""Check digits that turn a digit pattern into an identifier: Luhn, IBAN mod 97, KVNR."""

from __future__ import annotations


def luhn_valid(digits: str) -> bool:
    """Payment card numbers (ISO/IEC 7812)."""
    if not digits.isdigit() or not 12 <= len(digits) <= 19:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# IBAN lengths of the SEPA countries and neighbours (SWIFT IBAN registry): detection uses them
# to end an IBAN written with spaces where it ends, not one group later ("… 0130 00 ab")
IBAN_LENGTHS = {
    "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "EE": 20,
    "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GR": 27, "HR": 21, "HU": 28, "IE": 22, "IS": 26,
    "IT": 27, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MT": 31, "NL": 18, "NO": 15, "PL": 28,
    "PT": 25, "RO": 24, "SE": 24, "SI": 19, "SK": 24, "TR": 26,
}  # fmt: skip
_IBAN_LETTERS = {ord(c): str(ord(c) - 55) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}  # A=10 … Z=35


def iban_valid(iban: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters to numbers, mod 97 == 1."""
    iban = iban.replace(" ", "").upper()
    if (
        not 15 <= len(iban) <= 34
        or not iban.isascii()
        or not iban.isalnum()
        or not iban[:2].isalpha()
        or not iban[2:4].isdigit()
    ):
        return False
    return int((iban[4:] + iban[:4]).translate(_IBAN_LETTERS)) % 97 == 1


def kvnr_valid(kvnr: str) -> bool:
    """Krankenversichertennummer, unchangeable part (§ 290 SGB V): a letter and nine digits,
    the last a check digit. The letter becomes its two-digit alphabet position (A=01 … Z=26);
    the 10 digits before the check digit are weighted 1,2,1,2,…, products' digits summed,
    check digit = sum mod 10."""
    if len(kvnr) != 10 or not ("A" <= kvnr[0] <= "Z") or not kvnr[1:].isdigit():
        return False
    digits = f"{ord(kvnr[0]) - 64:02d}" + kvnr[1:9]
    total = 0
    for i, ch in enumerate(digits):
        product = int(ch) * (1 if i % 2 == 0 else 2)
        total += product // 10 + product % 10
    return total % 10 == int(kvnr[9])


def kvnr_with_check_digit(letter: str, eight_digits: str) -> str:
    """Complete a KVNR (for generating test data)."""
    for check in "0123456789":
        candidate = letter + eight_digits + check
        if kvnr_valid(candidate):
            return candidate
    raise ValueError("no check digit fits")  # unreachable: one of ten always fits
