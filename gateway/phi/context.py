"""The structured context Magento sends beside the free text (``sovereign.context``).

Typed so that a wrong type or format is a 422 naming the field; validators never put the
value into their message. Each field maps to a PHI category and to the spellings under
which its value may turn up in free text (``known_values``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.phi.checksums import iban_valid, kvnr_valid

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[A-Za-z]{2,}$")
MONTHS_DE = ["Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September",
              "Oktober", "November", "Dezember"]  # fmt: skip
MONTHS_EN = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
              "October", "November", "December"]  # fmt: skip


class Address(BaseModel):
    model_config = ConfigDict(extra="forbid")
    street: str | None = Field(default=None, max_length=200, description="Street and house number.")
    postcode: str | None = Field(default=None, pattern=r"^[A-Za-z0-9 \-]{3,10}$")
    city: str | None = Field(default=None, max_length=100)
    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$", description="ISO 3166 alpha-2.")


class Product(BaseModel):
    """Catalogue data. ``cost`` and ``margin`` are internal pricing: no policy lets them through."""

    model_config = ConfigDict(extra="forbid")
    sku: str | None = Field(default=None, max_length=64)
    name: str | None = Field(default=None, max_length=200)
    category: str | None = Field(default=None, max_length=200)
    price: Decimal | None = Field(default=None, ge=0, description="Public price.")
    cost: Decimal | None = Field(default=None, ge=0, description="Internal: never forwarded.")
    margin: Decimal | None = Field(default=None, description="Internal: never forwarded.")


class PatientContext(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200, description="Full name as the shop knows it.")
    date_of_birth: date | None = Field(default=None, description="ISO date, YYYY-MM-DD.")
    kvnr: str | None = Field(default=None, description="Krankenversichertennummer (10 characters).")
    email: str | None = Field(default=None, max_length=254)
    phone: str | None = Field(default=None, max_length=32)
    iban: str | None = Field(default=None, max_length=42)
    address: Address | None = None
    customer_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9\-]{1,32}$")
    order_ids: list[str] = Field(default_factory=list, max_length=50)
    product: Product | None = None

    @field_validator("date_of_birth", mode="before")
    @classmethod
    def _date_as_text(cls, value: object) -> object:
        # pydantic would read a number as seconds since 1970: a birth date is text, YYYY-MM-DD
        if value is not None and not isinstance(value, str | date):
            raise ValueError("must be an ISO date string, YYYY-MM-DD")
        return value

    @field_validator("kvnr")
    @classmethod
    def _kvnr(cls, v: str | None) -> str | None:
        if v is not None and not kvnr_valid(v.strip().upper()):
            raise ValueError(
                "must be a KVNR: one letter and nine digits with a valid check digit (§ 290 SGB V)"
            )
        return v.strip().upper() if v else v

    @field_validator("email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        if v is not None and not _EMAIL.match(v):
            raise ValueError("must be an e-mail address (local@domain.tld)")
        return v

    @field_validator("phone")
    @classmethod
    def _phone(cls, v: str | None) -> str | None:
        if v is not None and (
            not re.fullmatch(r"[+\d ()\-/.]+", v) or not 6 <= sum(c.isdigit() for c in v) <= 15
        ):
            raise ValueError("must be a phone number: 6 to 15 digits, optionally with +, spaces, -, / or ()")
        return v

    @field_validator("iban")
    @classmethod
    def _iban(cls, v: str | None) -> str | None:
        if v is not None and not iban_valid(v):
            raise ValueError("must be an IBAN with valid check digits (ISO 13616)")
        return v

    @field_validator("order_ids")
    @classmethod
    def _order_ids(cls, v: list[str]) -> list[str]:
        for item in v:
            if not re.fullmatch(r"[A-Za-z0-9\-]{1,32}", item):
                raise ValueError("each order id must be 1-32 letters, digits or '-'")
        return v


#: dotted field path -> PHI category (None: not patient data)
FIELD_CATEGORIES: dict[str, str | None] = {
    "name": "NAME",
    "date_of_birth": "DATE",
    "kvnr": "KVNR",
    "email": "EMAIL",
    "phone": "PHONE",
    "iban": "IBAN",
    "address.street": "ADDRESS",
    "address.postcode": "POSTCODE",
    "address.city": "ADDRESS",
    "address.country": None,
    "customer_id": "CUSTOMER_ID",
    "order_ids": "ORDER_ID",
    "product.sku": None,
    "product.name": None,
    "product.category": None,
    "product.price": None,
    "product.cost": "PRICING",
    "product.margin": "PRICING",
}


def set_fields(ctx: PatientContext) -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every field that has a value."""
    for path in FIELD_CATEGORIES:
        obj: Any = ctx
        for part in path.split("."):
            obj = getattr(obj, part, None) if obj is not None else None
        if obj not in (None, [], ""):
            yield path, obj


def spellings(path: str, value: Any) -> list[tuple[str, list[str]]]:
    """(canonical value, forms in which it may appear in free text) for a context value. Each
    canonical value gets its own token; a name's parts are values of their own."""
    if path == "name":
        parts = [p for p in re.split(r"[\s\-]+", str(value)) if len(p) >= 2]
        return [(str(value), [str(value)]), *((p, [p]) for p in parts)]
    if path == "date_of_birth":
        d: date = value
        y2 = f"{d.year % 100:02d}"
        forms = [
            f"{d:%d.%m.%Y}", f"{d.day}.{d.month}.{d.year}", f"{d:%d.%m}.{y2}", f"{d.day}.{d.month}.{y2}",
            f"{d:%Y-%m-%d}", f"{d.month}/{d.day}/{d.year}", f"{d:%m/%d/%Y}",
            f"{d.day}. {MONTHS_DE[d.month - 1]} {d.year}", f"{d.day} {MONTHS_EN[d.month - 1]} {d.year}",
            f"{MONTHS_EN[d.month - 1]} {d.day} {d.year}", f"{d.day} {MONTHS_EN[d.month - 1][:3]} {d.year}",
            f"{MONTHS_EN[d.month - 1][:3]} {d.day} {d.year}",
            # other orders and lengths: 1968-3-14, 68-03-14, 14 Mar 68, 14th March 1968, 14. Mrz. 1968
            f"{d.year}-{d.month}-{d.day}", f"{y2}-{d:%m-%d}", f"{d.day} {MONTHS_EN[d.month - 1]} {y2}",
            f"{d.day} {MONTHS_EN[d.month - 1][:3]} {y2}", f"{d.day}. {MONTHS_DE[d.month - 1]} {y2}",
            f"{d.day}{_ordinal(d.day)} {MONTHS_EN[d.month - 1]} {d.year}",
            f"{MONTHS_EN[d.month - 1]} {d.day}{_ordinal(d.day)} {d.year}",
            f"{d.day}. {_MONTHS_DE_SHORT[d.month - 1]} {d.year}",
        ]  # fmt: skip
        return [(f"{d:%d.%m.%Y}", forms)]
    if path == "phone":
        return [(str(value), _phone_spellings(str(value)))]
    if path == "address.street":
        street = str(value)
        bare = re.sub(r"\s*\d+\s*[a-zA-Z]?$", "", street)
        short = re.sub(r"(?i)stra(ß|ss)e", "str", street)
        return [(street, [street, short]), (bare, [bare, re.sub(r"(?i)stra(ß|ss)e", "str", bare)])]
    if path == "order_ids":
        return [(str(v), [str(v)]) for v in value]
    return [(str(value), [str(value)])]


_MONTHS_DE_SHORT = ["Jan", "Feb", "Mrz", "Apr", "Mai", "Jun", "Jul", "Aug", "Sep", "Okt", "Nov", "Dez"]


def _ordinal(day: int) -> str:
    return "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


def _phone_spellings(phone: str) -> list[str]:
    """Country code with and without 00, trunk zero or none, the national number alone
    ("30 1234567" for "+49 30 1234567"). An international number is split at its country
    code as libphonenumber's table of calling codes (``phonenumbers``) has it (calling codes
    are prefix-free; a lookup, not ``phonenumbers.parse``, which costs 30 us a number); a
    number without one, or with an unknown one, gets every plausible split."""
    digits = re.sub(r"\D", "", phone)
    if phone.strip().startswith("+") or digits.startswith("00"):
        digits = digits[2:] if digits.startswith("00") else digits
        for cc_len in (1, 2, 3):
            if int(digits[:cc_len] or 0) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
                cc, national = digits[:cc_len], digits[cc_len:]
                # "+49 (0)30 …": the trunk zero written in brackets is not part of the number
                national = national[1:] if national.startswith("0") and "(0)" in phone else national
                if len(national) >= 5:
                    return [
                        national,
                        "0" + national,
                        cc + national,
                        "00" + cc + national,
                        cc + "0" + national,
                    ]
    return _heuristic_phone_spellings(phone)


def _heuristic_phone_spellings(phone: str) -> list[str]:
    digits = re.sub(r"\D", "", phone)
    if phone.strip().startswith("+") or digits.startswith("00"):
        digits = digits[2:] if digits.startswith("00") else digits
        out = []
        for cc_len in (1, 2, 3):
            cc, national = digits[:cc_len], digits[cc_len:]
            if len(national) >= 5:
                out += [cc + national, "00" + cc + national, "0" + national, cc + "0" + national, national]
        return out
    national = digits[1:] if digits.startswith("0") else digits
    out = ["0" + national, national]
    for cc in ("49", "43", "41", "44", "33", "31"):  # a national number may be written with its country code
        out += [cc + national, "00" + cc + national, cc + "0" + national]
    return out
