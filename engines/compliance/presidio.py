"""Optional: Microsoft Presidio's predefined pattern recognizers as an extra validator of free-text columns
(``free_text_with_pii``), turned on by ``database_scripts.compliance.presidio: true`` (or the scan option).

It runs offline, without a downloaded model: the recognizers (e-mail, phone, card, IBAN, IP, US SSN) are
used directly, with no NLP engine (``AnalyzerEngine()`` itself would fetch a spaCy model and fails offline),
and tldextract, which Presidio's e-mail check calls, is pointed at the public-suffix snapshot it ships so it
never fetches the list. A text counts when Presidio finds an entity with a score >= ``MIN_SCORE`` in it;
the finding's evidence carries the count and the entity types, never the texts.

Installed by the ``presidio`` extra (``pip install 'dbfleet[presidio]'``): presidio-analyzer requires spaCy,
thinc, blis and numpy (about 260 MB), so it is not part of the test extra.
"""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any

from engines.errors import ConfigError

MIN_SCORE = 0.4  # Presidio scores a bare phone number pattern 0.4, a checksummed card or IBAN 1.0
RECOGNIZERS = ("EmailRecognizer", "PhoneRecognizer", "CreditCardRecognizer", "IbanRecognizer", "IpRecognizer",
               "UsSsnRecognizer")


class PresidioTexts:
    """Counts texts in which Presidio's pattern recognizers find personal data."""

    def __init__(self) -> None:
        try:
            from presidio_analyzer import predefined_recognizers
        except ImportError as exc:
            raise ConfigError([("compliance.presidio", "presidio-analyzer is not installed in this worker: "
                                                       "pip install 'dbfleet[presidio]', or set presidio: false "
                                                       f"({type(exc).__name__}: {exc})")]) from None
        _offline_tldextract()
        self.recognizers = [getattr(predefined_recognizers, name)() for name in RECOGNIZERS]
        self.found: Counter[str] = Counter()

    def entities(self, text: str) -> set[str]:
        """Entity types Presidio finds in ``text`` (score >= MIN_SCORE)."""
        out: set[str] = set()
        for rec in self.recognizers:
            for res in rec.analyze(text, rec.supported_entities, None):
                if res.score >= MIN_SCORE:
                    out.add(res.entity_type)
        return out

    def __call__(self, text: str) -> bool:
        found = self.entities(text)
        self.found.update(found)
        return bool(found)


def _offline_tldextract() -> None:
    """Make the module-level extractor tldextract.extract uses read its bundled snapshot only."""
    import tldextract
    from tldextract import tldextract as impl

    offline = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    impl.TLD_EXTRACTOR = offline
    tldextract.extract = offline  # type: ignore[assignment]
    impl.extract = offline  # type: ignore[assignment]


@functools.lru_cache(maxsize=1)
def presidio_validator() -> PresidioTexts:
    """One set of recognizers per process (building them compiles their patterns)."""
    return PresidioTexts()


def wanted(settings: dict[str, Any]) -> bool:
    """Whether the scan asked for Presidio (``presidio: true``)."""
    return str(settings.get("presidio", False)).strip().lower() in ("1", "true", "yes", "on")
