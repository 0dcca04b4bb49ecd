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


def iban_valid(iban: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters to numbers, mod 97 == 1."""
    iban = iban.replace(" ", "").upper()
    if not 15 <= len(iban) <= 34 or not iban[:2].isalpha() or not iban[2:4].isdigit() or not iban.isalnum():
        return False
    rearranged = iban[4:] + iban[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


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
