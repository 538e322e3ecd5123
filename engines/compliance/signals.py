"""Column-name signals (multilingual) and classification pins read from column comments / security labels."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from engines.compliance.model import CATEGORIES

# category -> (tokens that signal it alone, weight). Tokens are whole words of the column name after
# splitting on _ - . and camelCase, accents removed: "prénom" -> "prenom", "TelNr" -> "tel", "nr".
TOKENS: dict[str, tuple[frozenset[str], float]] = {
    "email": (frozenset({"email", "emails", "mail", "courriel", "correo", "posta", "epost", "mailadresse"}), 0.7),
    "phone": (frozenset({"phone", "telephone", "tel", "telefon", "telefono", "telefone", "mobile", "mobil",
                         "handy", "portable", "cell", "cellphone", "celular", "movil", "fax", "msisdn",
                         "telefonnummer", "rufnummer", "gsm"}), 0.7),
    "person_name": (frozenset({"firstname", "lastname", "fullname", "surname", "forename", "givenname",
                               "familyname", "nom", "prenom", "nombre", "apellido", "apellidos", "vorname",
                               "nachname", "cognome", "nome", "achternaam", "voornaam", "fornavn", "efternamn",
                               "fornamn", "maidenname", "middlename", "contactname"}), 0.65),
    "address": (frozenset({"address", "addr", "street", "adresse", "rue", "strasse", "calle", "direccion",
                           "indirizzo", "via", "endereco", "postcode", "postalcode", "zip", "zipcode", "plz",
                           "codepostal", "cp", "housenumber", "hausnummer", "gps", "lat", "lon", "lng",
                           "latitude", "longitude", "geolocation", "geo"}), 0.6),
    "dob": (frozenset({"dob", "birth", "birthday", "birthdate", "born", "geburtsdatum", "geburtstag",
                       "naissance", "nacimiento", "nascita", "fodelsedatum", "geboortedatum"}), 0.75),
    "national_id": (frozenset({"ssn", "nin", "nino", "nir", "insee", "dni", "nie", "nif", "bsn", "cpf", "rut",
                               "curp", "aadhaar", "pesel", "personnummer", "codicefiscale", "steuerid",
                               "idnr", "passport", "passeport", "reisepass", "nationalid", "taxid", "tin",
                               "sozialversicherungsnummer", "svnr", "socialsecurity", "driverslicense",
                               "licence", "license"}), 0.75),
    "card_number": (frozenset({"pan", "cc", "ccnum", "cardnumber", "creditcard", "cardno", "kreditkarte",
                               "carte", "tarjeta", "cartao"}), 0.7),
    "iban": (frozenset({"iban", "bic", "swift", "bankaccount", "accountnumber", "konto", "kontonummer", "rib",
                        "sortcode", "routingnumber"}), 0.75),
    "ip": (frozenset({"ip", "ipaddr", "ipaddress", "ipv4", "ipv6", "remoteaddr", "clientip", "inet",
                      "remoteip", "sourceip"}), 0.7),
    "health": (frozenset({"diagnosis", "diagnose", "diagnostic", "diagnostico", "health", "medical",
                          "icd", "icd10", "condition", "allergy", "allergies", "symptom", "symptoms",
                          "medication", "prescription", "treatment", "disease", "krankheit", "maladie",
                          "enfermedad", "bloodtype", "blutgruppe", "disability", "pregnancy", "hiv"}), 0.75),
}
# adjacent token pairs that signal together what neither says alone: ("first", "name") ...
PAIRS: dict[tuple[str, str], str] = {
    ("first", "name"): "person_name", ("last", "name"): "person_name", ("full", "name"): "person_name",
    ("given", "name"): "person_name", ("family", "name"): "person_name", ("middle", "name"): "person_name",
    ("customer", "name"): "person_name", ("contact", "name"): "person_name",
    ("e", "mail"): "email", ("date", "birth"): "dob", ("birth", "date"): "dob", ("social", "security"):
    "national_id", ("tax", "id"): "national_id", ("national", "id"): "national_id", ("id", "card"):
    "national_id", ("credit", "card"): "card_number", ("card", "number"): "card_number",
    ("card", "no"): "card_number", ("card", "num"): "card_number", ("bank", "account"): "iban",
    ("account", "number"): "iban", ("ip", "address"): "ip", ("remote", "addr"): "ip",
    ("zip", "code"): "address", ("post", "code"): "address", ("postal", "code"): "address",
    ("blood", "type"): "health", ("phone", "number"): "phone",
}
# a bare "name" column is a person's name in a users table, a product's in a catalogue: weak alone
WEAK = {"name": ("person_name", 0.35), "city": ("address", 0.35), "country": ("address", 0.2),
        "card": ("card_number", 0.35), "location": ("address", 0.4), "notes": ("free_text_with_pii", 0.3),
        "comment": ("free_text_with_pii", 0.3), "comments": ("free_text_with_pii", 0.3),
        "bio": ("free_text_with_pii", 0.35), "message": ("free_text_with_pii", 0.3),
        "description": ("free_text_with_pii", 0.2), "age": ("dob", 0.3)}
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_PIN = re.compile(r"(?:dbfleet[:.\s]*)?pii\s*[:=]\s*(?P<cat>[a-z_]+)", re.I)


@dataclass(frozen=True)
class NameSignal:
    """A category suggested by a column's name, with how much the name alone says."""

    category: str
    weight: float
    token: str


def tokens(name: str) -> list[str]:
    """Lower-case, accent-free words of a column name: ``"PrénomClient"`` -> ``["prenom", "client"]``."""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    plain = _CAMEL.sub("_", plain)
    return [t for t in re.split(r"[^A-Za-z0-9]+", plain.lower()) if t]


def name_signals(name: str) -> list[NameSignal]:
    """Every category a column name suggests, strongest first."""
    words = tokens(name)
    found: dict[str, NameSignal] = {}

    def add(cat: str, weight: float, token: str) -> None:
        if cat not in found or found[cat].weight < weight:
            found[cat] = NameSignal(cat, weight, token)

    joined = "".join(words)
    for cat, (vocab, weight) in TOKENS.items():
        for word in [*words, joined]:
            if word in vocab:
                add(cat, weight, word)
    for a, b in zip(words, words[1:], strict=False):
        if (a, b) in PAIRS:
            add(PAIRS[(a, b)], 0.75, f"{a}_{b}")
    for word in words:
        if word in WEAK:
            add(WEAK[word][0], WEAK[word][1], word)
    return sorted(found.values(), key=lambda s: -s.weight)


def pin_from_text(text: str | None) -> str | None:
    """``pii=iban`` / ``dbfleet:pii=none`` in a comment or security label: the pinned category, ``none``
    to suppress, or None when the text pins nothing. Unknown categories raise ValueError."""
    if not text:
        return None
    m = _PIN.search(text)
    if not m:
        return None
    cat = m.group("cat").lower()
    if cat != "none" and cat not in CATEGORIES:
        raise ValueError(f"pii={cat}: unknown category (known: none, {', '.join(CATEGORIES)})")
    return cat
