"""Deterministic masking rules: the same value under the same key always gives the same fake.

Every fake is drawn from a Faker instance (or an HMAC byte stream) seeded with HMAC-SHA256(key, rule, value),
so joins and foreign keys stay consistent across tables and databases masked with one key. The key is
never stored; only its fingerprint (a second HMAC) may be recorded to tell runs apart.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import re
import string
import struct
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from engines.errors import ConfigError

RULES = ("email", "name", "phone", "default", "hash", "null", "redact", "keep", "date_shift", "generalize",
         "card", "iban", "faker")
# rules whose output repeats for different inputs: never on a unique column
NOT_UNIQUE = ("null", "redact", "generalize", "date_shift")
_PROVIDER = re.compile(r"^[a-z][a-z0-9_]*$")
_FORBIDDEN = {"seed", "seed_instance", "seed_locale", "add_provider", "get_providers", "provider", "format",
              "set_formatter", "get_formatter", "parse", "random", "unique", "optional", "weights"}


@dataclass(frozen=True)
class Rule:
    """A parsed rule: ``email``, ``date_shift:30``, ``faker:company``."""

    name: str
    arg: str | None = None

    @property
    def text(self) -> str:
        """The rule as written (``date_shift:30``)."""
        return f"{self.name}:{self.arg}" if self.arg else self.name


def parse_rule(text: str, where: str = "rule") -> Rule:
    """Parse and check a rule; unknown names list the known ones."""
    name, _, arg = str(text).strip().partition(":")
    name = name.strip().lower()
    if name not in RULES:
        raise ConfigError([(where, f"unknown anonymisation rule {text!r}; known: {', '.join(RULES)} (faker:<provider>)")])
    if name == "faker" and not (_PROVIDER.match(arg) and arg not in _FORBIDDEN):
        raise ConfigError([(where, f"faker rule needs a Faker provider name, e.g. faker:company (got {arg!r})")])
    if name == "date_shift" and arg and not arg.isdigit():
        raise ConfigError([(where, f"date_shift:<days> takes a whole number of days (got {arg!r})")])
    if name == "generalize" and arg and not arg.isdigit():
        raise ConfigError([(where, f"generalize:<n> takes a bucket size (got {arg!r})")])
    return Rule(name, arg or None)


_DIGITS = "".join(str(b % 10) for b in range(256))
_UPPER = "".join(string.ascii_uppercase[b % 26] for b in range(256))
_LOWER = "".join(string.ascii_lowercase[b % 26] for b in range(256))
_IS_DIGIT, _IS_UPPER, _IS_LOWER = frozenset(string.digits), frozenset(string.ascii_uppercase), \
    frozenset(string.ascii_lowercase)
_DOMAINS = ("example.com", "example.org", "example.net")
_ABSENT = object()
CACHE_LIMIT = 200_000  # distinct values remembered per compiled rule (then the cache starts over)
_TWO_U32 = struct.Struct(">II").unpack_from  # the first two big-endian 32-bit words of a digest
_IBAN_LETTERS = {ord(c): str(i) for i, c in enumerate(string.ascii_uppercase, 10)}


def iban_check_digits(country: str, bban: str) -> str:
    """ISO 13616 check digits (mod 97-10) of ``country`` + ``bban``."""
    number = int((bban + country + "00").translate(_IBAN_LETTERS))
    return f"{98 - number % 97:02d}"


class Masker:
    """Applies rules to values, deterministically under ``key``."""

    def __init__(self, key: bytes, locale: str = "en_US") -> None:
        from faker import Faker

        if len(key) < 16:
            raise ConfigError([("compliance.key", "the anonymisation key must be at least 16 bytes")])
        self._key = key
        self.fake = Faker(locale)
        self._random = random.Random()
        self.fake.random = self._random  # type: ignore[attr-defined]  # reseeded per value, cheaper than seed_instance
        self._name_lists: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        self._email_lists: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        self.fingerprint = hmac.new(key, b"dbfleet-anonymize-fingerprint", hashlib.sha256).hexdigest()[:16]
        # HMAC (RFC 2104) from SHA-256 states keyed once: copying them costs a third of hmac.digest per value
        block = (hashlib.sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def digest(self, rule: str, value: Any, attempt: int = 0) -> bytes:
        """HMAC-SHA256 of the rule, the value's text and the collision attempt."""
        inner = self._inner.copy()
        inner.update(f"{rule}\x00{value}\x00{attempt}".encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def _seeded(self, rule: str, value: Any, attempt: int) -> Any:
        self._random.seed(int.from_bytes(self.digest(rule, value, attempt)[:8], "big"))
        return self.fake

    def _stream(self, rule: str, value: Any, attempt: int, n: int) -> bytes:
        """``n`` pseudo-random bytes: SHAKE-256 extended from the value's HMAC."""
        return hashlib.shake_256(self.digest(rule, value, attempt)).digest(n)

    def apply(self, rule: Rule, value: Any, max_length: int | None = None, attempt: int = 0) -> Any:
        """The masked value of ``value``; NULL stays NULL (except for ``keep``, everything else is replaced)."""
        if value is None or rule.name == "keep":
            return value
        if rule.name == "null":
            return None
        out = getattr(self, f"_r_{rule.name}")(rule, value, attempt)
        if isinstance(out, str) and max_length:
            out = out[:max_length]
        return out

    def compile(self, rule: Rule, max_length: int | None = None) -> CompiledRule:
        """``apply`` of one rule to one column, computing each distinct value's fake once (values repeat:
        names, cities, phone numbers shared by a household); attempts > 0 (collision bumps) go through
        ``apply``. Call it on one value, or ``.many(values)`` on a batch's column."""
        return CompiledRule(self, rule, max_length)

    # -- rules ---------------------------------------------------------------------------------
    def _names(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """First and last names of the Faker locale (unweighted: Faker's weighted draw costs ~1 ms a value)."""
        if self._name_lists is None:
            import importlib

            loc = self.fake.locales[0] if hasattr(self.fake, "locales") else "en_US"
            provider = importlib.import_module(f"faker.providers.person.{loc}").Provider
            first = tuple(dict.fromkeys([*getattr(provider, "first_names_male", ()),
                                         *getattr(provider, "first_names_female", ())])) or tuple(provider.first_names)
            self._name_lists = (first, tuple(dict.fromkeys(provider.last_names)))
        return self._name_lists

    def _email_names(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The name lists as e-mail local parts: NFKD to ASCII, lower case, no spaces (per name, once: the
        same text as normalising "first.last" per value, since NFKD never composes across the dot)."""
        if self._email_lists is None:
            def local(name: str) -> str:
                return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower().replace(" ", "")

            first, last = self._names()
            self._email_lists = (tuple(map(local, first)), tuple(map(local, last)))
        return self._email_lists

    def _r_email(self, rule: Rule, value: Any, attempt: int) -> str:
        return self._b_email(rule, [value], attempt)[0]

    def _b_email(self, rule: Rule, values: Sequence[Any], attempt: int = 0) -> list[str]:
        """``_r_email`` of many values (non-NULL) in one loop: the digest inlined, names looked up once."""
        first, last = self._email_names()
        nfirst, nlast = len(first), len(last)
        inner, outer, pair, domains = self._inner.copy, self._outer.copy, _TWO_U32, _DOMAINS
        out = []
        for value in values:
            h = inner()
            h.update(f"email\x00{value}\x00{attempt}".encode())
            o = outer()
            o.update(h.digest())
            d = o.digest()
            a, b = pair(d)
            out.append(f"{first[a % nfirst]}.{last[b % nlast]}.{d[8:11].hex()}@{domains[d[11] % 3]}")
        return out

    def _r_name(self, rule: Rule, value: Any, attempt: int) -> str:
        d = self.digest("name", value, attempt)
        first, last = self._names()
        return f"{first[int.from_bytes(d[:4], 'big') % len(first)]} {last[int.from_bytes(d[4:8], 'big') % len(last)]}"

    def _r_faker(self, rule: Rule, value: Any, attempt: int) -> Any:
        fake = self._seeded(f"faker:{rule.arg}", value, attempt)
        fn = getattr(fake, str(rule.arg), None)
        if not callable(fn):
            raise ConfigError([("rule", f"Faker has no provider {rule.arg!r}")])
        out = fn()
        return out if isinstance(out, (date, datetime, int, float)) and not isinstance(value, str) else str(out)

    def _r_hash(self, rule: Rule, value: Any, attempt: int) -> str:
        return self.digest("hash", value, attempt).hex()

    def _r_redact(self, rule: Rule, value: Any, attempt: int) -> Any:
        if not isinstance(value, str):
            return self._r_default(rule, value, attempt)
        return "".join("*" if ch.isalnum() else ch for ch in value)

    def _r_phone(self, rule: Rule, value: Any, attempt: int) -> str:
        text = str(value)
        keep = re.match(r"^\s*\+\d{1,3}", text)  # keep the country calling code
        head = keep.group() if keep else ""
        return head + self._shape(text[len(head):], "phone", value, attempt, letters=False)

    def _r_default(self, rule: Rule, value: Any, attempt: int) -> Any:
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            digits = self._shape(str(abs(value)), "default", value, attempt)
            return int(digits) * (-1 if value < 0 else 1)
        if isinstance(value, (date, datetime)):
            return self._r_date_shift(Rule("date_shift"), value, attempt)
        return self._shape(str(value), "default", value, attempt)

    def _shape(self, text: str, rule: str, value: Any, attempt: int, letters: bool = True) -> str:
        """Same length and character classes: digits -> digits, letters -> letters of the same case."""
        stream = self._stream(rule, value, attempt, max(1, len(text)))
        return "".join([_DIGITS[b] if ch in _IS_DIGIT else _UPPER[b] if letters and ch in _IS_UPPER else
                        _LOWER[b] if letters and ch in _IS_LOWER else
                        ("x" if ch.islower() else "X") if letters and ch.isalpha() else ch
                        for ch, b in zip(text, stream, strict=False)])

    def _r_date_shift(self, rule: Rule, value: Any, attempt: int) -> Any:
        span = int(rule.arg or 30)
        offset = 1 + int.from_bytes(self.digest("date_shift", value, attempt)[:4], "big") % span
        if self.digest("date_shift-sign", value, attempt)[0] & 1:
            offset = -offset
        if isinstance(value, (date, datetime)):
            return value + timedelta(days=offset)
        shifted = date.fromisoformat(str(value)[:10]) + timedelta(days=offset)
        return shifted.isoformat() + str(value)[10:]

    def _r_generalize(self, rule: Rule, value: Any, attempt: int) -> Any:
        if isinstance(value, datetime):
            return value.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
        if isinstance(value, date):
            return value.replace(month=1, day=1)
        if isinstance(value, int) and not isinstance(value, bool):
            size = int(rule.arg or 10)
            return value - value % size
        text = str(value)
        keep = int(rule.arg or 2)
        return text[:keep] + "".join("*" if ch.isalnum() else ch for ch in text[keep:])

    def _r_card(self, rule: Rule, value: Any, attempt: int) -> str:
        from stdnum import luhn

        text = str(value)
        digits = re.sub(r"\D", "", text)
        if len(digits) < 12:
            return self._shape(text, "card", value, attempt, letters=False)
        stream = self._stream("card", value, attempt, len(digits))
        body = digits[:6] + "".join(str(b % 10) for b in stream[6:len(digits) - 1])
        new = body + luhn.calc_check_digit(body)
        it = iter(new)
        return "".join(next(it) if ch.isdigit() else ch for ch in text)

    def _r_iban(self, rule: Rule, value: Any, attempt: int) -> str:
        text = str(value)
        compact = text.replace(" ", "").upper()
        if len(compact) < 5 or not (compact[:2].isascii() and compact[:2].isalpha()) or not compact.isalnum():
            return self._shape(text, "iban", value, attempt)
        bban = self._shape(compact[4:], "iban", value, attempt)
        new = compact[:2] + iban_check_digits(compact[:2], bban) + bban
        return " ".join(new[i:i + 4] for i in range(0, len(new), 4)) if " " in text else new


class CompiledRule:
    """One rule bound to a masker and a column's length, with a bounded cache of the fakes computed."""

    def __init__(self, masker: Masker, rule: Rule, max_length: int | None) -> None:
        self.rule, self.max_length = rule, max_length
        self._fn = None if rule.name in ("keep", "null") else getattr(masker, f"_r_{rule.name}")
        self._batch = getattr(masker, f"_b_{rule.name}", None)  # the rule over many values, when it has one
        self._cache: dict[Any, Any] = {}

    def _miss(self, value: Any) -> Any:
        if value is None:
            return None
        out = self._fn(self.rule, value, 0)  # type: ignore[misc]
        if isinstance(out, str) and self.max_length:
            out = out[:self.max_length]
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        try:
            self._cache[value] = out
        except TypeError:  # an unhashable value (a JSON document, an array): not cached
            pass
        return out

    def __call__(self, value: Any) -> Any:
        return self.many([value])[0]

    def many(self, values: Sequence[Any]) -> list[Any]:
        """The fakes of ``values`` (a batch's column), in order."""
        if self._fn is None:
            return list(values) if self.rule.name == "keep" else [None] * len(values)
        get, miss, absent = self._cache.get, self._miss, _ABSENT
        try:
            if self._batch is not None:  # the values not cached yet, all at once
                fresh = list(dict.fromkeys(v for v in values if v is not None and get(v, absent) is absent))
                if fresh:
                    self._store(fresh, self._batch(self.rule, fresh))
            return [out if (out := get(v, absent)) is not absent else miss(v) for v in values]
        except TypeError:  # unhashable values
            return [miss(v) for v in values]

    def _store(self, values: list[Any], fakes: list[Any]) -> None:
        if self.max_length:
            n = self.max_length
            fakes = [f[:n] if isinstance(f, str) else f for f in fakes]
        if len(self._cache) + len(values) > CACHE_LIMIT:
            self._cache.clear()
        self._cache.update(zip(values, fakes, strict=True))
