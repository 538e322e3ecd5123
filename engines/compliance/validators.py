"""Content validators: does a sampled value look like PII of a category? Backed by python-stdnum,
phonenumbers, ipaddress and Faker's locale data (names, street words); no value is ever kept."""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pt_BR", "sv_SE", "pl_PL")
PHONE_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "BR", "SE", "PL", "IN")
_EMAIL = re.compile(r"^[\w!#$%&'*+/=?^`{|}~-]+(?:\.[\w!#$%&'*+/=?^`{|}~-]+)*"
                    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$")
_EMAIL_IN = re.compile(r"[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,63}")
_PHONE_CHARS = re.compile(r"^\+?[\d\s().\-/]{6,24}(?:\s*(?:x|ext\.?)\s*\d{1,6})?$", re.I)
_PHONE_IN = re.compile(r"(?<![\w+])\+\d[\d\s().\-]{7,18}\d")
_PHONE_NAT = re.compile(r"(?<![\w/])(?:\(\d{2,5}\)\s?|\d{2,5}[\s.-])\d{2,4}[\s.-]?\d{2,5}(?:[\s.-]\d{2,4})?"
                        r"(?:\s*(?:x|ext\.?)\s*\d{1,6})?(?![\w/])", re.I)
_IBAN_IN = re.compile(r"\b[A-Z]{2}\d{2}(?:\s?[A-Z0-9]{4}){2,7}(?:\s?[A-Z0-9]{1,4})?\b")
_CARD_IN = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_DATE_LIKE = re.compile(r"^\d{4}[-/.]\d{1,2}[-/.]\d{1,2}$|^\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}$")
_ICD10 = re.compile(r"^[A-TV-Z]\d[0-9AB](?:\.[0-9A-TV-Z]{1,4})?$")
_WORD = re.compile(r"[^\W\d_][^\W\d_'’.-]*", re.U)
MEDICAL_TERMS = frozenset({
    "diabetes", "asthma", "hypertension", "cancer", "carcinoma", "depression", "anxiety", "hiv", "aids",
    "hepatitis", "epilepsy", "migraine", "arthritis", "pregnancy", "pregnant", "allergy", "allergic",
    "tuberculosis", "influenza", "covid-19", "schizophrenia", "bipolar", "dementia", "alzheimer",
    "fracture", "stroke", "obesity", "anemia", "leukemia", "lymphoma", "insulin", "chemotherapy",
    "diagnosed", "diagnosis", "prescribed", "mg", "dosage", "surgery", "therapy", "psoriasis", "eczema",
})
# card brands by IIN prefix ranges (ISO/IEC 7812 issuer identification numbers), with valid lengths
_IIN = (((4, 4), (13, 16, 19)), ((51, 55), (16,)), ((2221, 2720), (16,)), ((34, 34), (15,)), ((37, 37), (15,)),
        ((6011, 6011), (16, 19)), ((644, 649), (16, 19)), ((65, 65), (16, 19)), ((3528, 3589), (16, 19)),
        ((300, 305), (14, 16, 19)), ((36, 36), (14, 16, 19)), ((38, 39), (14, 16, 19)), ((62, 62), (16, 17, 18, 19)),
        ((50, 50), (12, 13, 14, 15, 16, 17, 18, 19)), ((56, 69), (12, 13, 14, 15, 16, 17, 18, 19)))
NATIONAL_IDS = ("us.ssn", "fr.nir", "es.dni", "es.nie", "nl.bsn", "se.personnummer", "it.codicefiscale",
                "br.cpf", "de.idnr", "pl.pesel", "gb.nhs", "dk.cpr", "fi.hetu", "be.nn", "no.fodselsnummer")


@functools.lru_cache(maxsize=1)
def name_sets() -> tuple[frozenset[str], frozenset[str]]:
    """(first names, last names), lower-case, from Faker's person providers of :data:`LOCALES`."""
    import importlib

    first: set[str] = set()
    last: set[str] = set()
    for loc in LOCALES:
        try:
            provider = importlib.import_module(f"faker.providers.person.{loc}").Provider
        except ImportError:
            continue
        for attr, target in (("first_names", first), ("first_names_male", first), ("first_names_female", first),
                             ("last_names", last)):
            target.update(n.lower() for n in getattr(provider, attr, ()) or ())
    return frozenset(first), frozenset(last)


@functools.lru_cache(maxsize=1)
def street_words() -> frozenset[str]:
    """Street suffixes/prefixes ("Street", "Suite", "rue", "straße") from Faker's address providers."""
    import importlib

    words = {"street", "st", "road", "rd", "avenue", "ave", "apt", "suite", "unit", "box", "lane", "drive"}
    for loc in LOCALES:
        try:
            provider = importlib.import_module(f"faker.providers.address.{loc}").Provider
        except ImportError:
            continue
        for attr in ("street_suffixes", "street_prefixes", "street_suffixes_long", "street_suffixes_short",
                     "street_titles"):
            for w in getattr(provider, attr, ()) or ():
                words.update(t.lower().strip(".") for t in str(w).split() if len(t) > 1)
    return frozenset(words)


@functools.cache
def _stdnum(name: str) -> Any:
    import importlib

    return importlib.import_module(f"stdnum.{name}")


def is_email(v: str) -> bool:
    """RFC 5322 dot-atom local part @ a dotted domain with an alphabetic TLD."""
    return len(v) <= 254 and bool(_EMAIL.match(v.strip()))


def is_phone(v: str) -> bool:
    """A phone number in some common notation that phonenumbers calls possible (with or without +CC)."""
    import phonenumbers

    v = v.strip()
    if not _PHONE_CHARS.match(v) or _DATE_LIKE.match(v):
        return False
    main = re.split(r"(?i)\s*(?:x|ext\.?)\s*\d", v)[0]
    digits = re.sub(r"\D", "", main)
    if not 7 <= len(digits) <= 15 or len(set(digits)) < 3:
        return False
    regions = (None,) if main.startswith("+") else PHONE_REGIONS
    for region in regions:
        try:
            if phonenumbers.is_possible_number(phonenumbers.parse(main, region)):
                return True
        except phonenumbers.NumberParseException:
            continue
    return False


def is_card(v: str) -> bool:
    """13-19 digits passing Luhn whose prefix is an issuer range with that length."""
    digits = re.sub(r"[ -]", "", v.strip())
    if not digits.isdigit() or not 12 <= len(digits) <= 19:
        return False
    if not _stdnum("luhn").is_valid(digits):
        return False
    for (lo, hi), lengths in _IIN:
        width = len(str(lo))
        if lo <= int(digits[:width]) <= hi and len(digits) in lengths:
            return True
    return False


def is_iban(v: str) -> bool:
    """A valid IBAN (country format and mod-97 check digits)."""
    return _stdnum("iban").is_valid(v)


def is_national_id(v: str) -> bool:
    """A valid national identifier of one of :data:`NATIONAL_IDS` (SSN, NIR, DNI, BSN, CPF, ...)."""
    v = v.strip()
    if not 8 <= len(v) <= 20:
        return False
    for name in NATIONAL_IDS:
        try:
            if _stdnum(name).is_valid(v):
                return True
        except Exception:  # noqa: S112 - a validator that rejects by raising is a plain "no"
            continue
    return False


def is_ip(v: str) -> bool:
    """An IPv4 or IPv6 address (optionally with a prefix length)."""
    try:
        ipaddress.ip_interface(v.strip())
    except ValueError:
        return False
    return True


def is_birth_date(v: Any) -> bool:
    """A date (or ISO date text) at which someone alive now could have been born (0-120 years ago)."""
    if isinstance(v, datetime):
        v = v.date()
    if isinstance(v, str):
        try:
            v = date.fromisoformat(v.strip()[:10])
        except ValueError:
            return False
    if not isinstance(v, date):
        return False
    age = (date.today() - v).days / 365.25
    return 0 <= age <= 120


def is_person_name(v: str) -> bool:
    """1-4 words, the first a known first name or the last a known last name, most words known names."""
    first, last = name_sets()
    words = [w.lower().strip(".-'’") for w in _WORD.findall(v)]
    words = [w for w in words if w not in ("mr", "mrs", "ms", "dr", "prof", "herr", "frau", "mme", "m", "jr", "sr")]
    if not 1 <= len(words) <= 4 or len(v) > 80 or any(ch.isdigit() for ch in v):
        return False
    known = sum(1 for w in words if w in first or w in last)
    if len(words) == 1:
        return known == 1
    return (words[0] in first or words[-1] in last) and known * 2 >= len(words) + 1


def is_address(v: str) -> bool:
    """Street-address text: a house number and a street word ("Street", "Suite", "rue", "straße")."""
    v = v.strip()
    if not 5 <= len(v) <= 120 or not any(ch.isdigit() for ch in v):
        return False
    words = {w.lower().strip(".,") for w in re.split(r"[\s,]+", v)}
    if words & street_words():
        return True
    return bool(re.search(r"(?i)\w(straße|strasse|str\.|weg|gasse|allee|platz|ring)\s*\d", v))


def is_health(v: str) -> bool:
    """An ICD-10 code or text naming a medical condition or treatment."""
    v = v.strip()
    if _ICD10.match(v):
        return True
    return bool({w.lower() for w in re.findall(r"[\w-]+", v)} & MEDICAL_TERMS)


def is_free_text(v: str) -> bool:
    """Running text: 20+ characters, 3+ words with letters."""
    return len(v) >= 20 and sum(1 for w in v.split() if any(c.isalpha() for c in w)) >= 3


def embeds_pii(v: str) -> bool:
    """Free text (3+ words) with an e-mail address, an international phone number, an IBAN or a card in it."""
    if not is_free_text(v):
        return False
    if _EMAIL_IN.search(v) or _PHONE_IN.search(v):
        return True
    if any(_national_phone(m.group()) for m in _PHONE_NAT.finditer(v)):
        return True
    if any(is_iban(m.group()) for m in _IBAN_IN.finditer(v)):
        return True
    return any(is_card(m.group()) for m in _CARD_IN.finditer(v))


def _national_phone(text: str) -> bool:
    """A number in running text: parenthesised area code, a trunk 0, or three digit groups (not 2024-000123)."""
    groups = len(re.findall(r"\d+", re.split(r"(?i)x|ext", text)[0]))
    return (text.startswith(("(", "0")) or groups >= 3) and is_phone(text)


VALIDATORS: dict[str, Callable[[Any], bool]] = {
    "email": is_email, "phone": is_phone, "person_name": is_person_name, "card_number": is_card, "iban": is_iban,
    "national_id": is_national_id, "dob": is_birth_date, "address": is_address, "ip": is_ip,
    "health": is_health, "free_text_with_pii": embeds_pii,
}
# how far content alone (no name signal) can take a category's confidence; 0: only with a name signal
STANDALONE = {"email": 0.97, "iban": 0.97, "card_number": 0.95, "ip": 0.9, "phone": 0.8, "person_name": 0.8,
              "address": 0.75, "free_text_with_pii": 0.85, "health": 0.6, "national_id": 0.45, "dob": 0.0}
# which validators apply to which column family (text columns get every one)
FAMILIES = {"text": tuple(VALIDATORS), "date": ("dob",), "inet": ("ip",), "number": ("card_number",),
            "other": ()}


def as_text(value: Any) -> str | None:
    """A sampled value as text for the validators (bytes decoded leniently, None stays None)."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)
