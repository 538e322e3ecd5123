"""Document-store discovery on named fakes (no MongoDB/Elasticsearch server runs here): mongomock, an
in-process MongoDB stand-in, and FakeElasticsearch below; the real-server paths are the same classes."""

from __future__ import annotations

from typing import Any

import mongomock
from faker import Faker

from engines.compliance.discovery import run_discovery
from engines.compliance.documents import flatten
from tests.conftest import db


class FakeConnector:
    """Stands in for a connector: ``conn`` is the fake client, ``db`` the registry entry."""

    def __init__(self, client: Any, entry: Any) -> None:
        self.conn, self.db = client, entry

    def __enter__(self) -> FakeConnector:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class FakeElasticsearch:
    """A fake of the two Elasticsearch client calls discovery makes (get_alias, search)."""

    def __init__(self, indices: dict[str, list[dict[str, Any]]]) -> None:
        self.data = indices
        self.indices = self

    def get_alias(self, index: str) -> dict[str, Any]:
        return {name: {} for name in self.data}

    def search(self, index: str, query: dict[str, Any], size: int, timeout: str) -> dict[str, Any]:
        assert "random_score" in query["function_score"]
        return {"hits": {"hits": [{"_source": d} for d in self.data[index][:size]]}}


def _people(n: int) -> list[dict[str, Any]]:
    fake = Faker("fr_FR")
    fake.seed_instance(2)
    return [{"nom": fake.last_name(), "contact": {"courriel": fake.email(), "telephones": [fake.phone_number()]},
             "carte": fake.credit_card_number(), "score": i} for i in range(n)]


def test_nested_mongodb_field_paths_are_classified() -> None:
    client = mongomock.MongoClient()
    client["h8_app"]["clients"].insert_many(_people(150))
    entry = db("app", kind="mongodb", host="127.0.0.1", dbname="h8_app")
    report = run_discovery(entry, {"sample_size": 50, "sample_seed": 1}, factory=lambda d: FakeConnector(client, d))
    assert report.error is None
    found = {f.key: f.category for f in report.findings}
    assert found == {"clients.nom": "person_name", "clients.contact.courriel": "email",
                     "clients.contact.telephones[]": "phone", "clients.carte": "card_number"}


def test_elasticsearch_index_fields_are_classified() -> None:
    client = FakeElasticsearch({"people": _people(80), ".kibana": [{"email": "a@b.example"}]})
    entry = db("search", kind="elasticsearch", host="127.0.0.1")
    report = run_discovery(entry, {"sample_size": 50}, factory=lambda d: FakeConnector(client, d))
    assert {f.key for f in report.findings} == {"people.nom", "people.contact.courriel",
                                               "people.contact.telephones[]", "people.carte"}


def test_flatten_walks_dicts_and_arrays() -> None:
    assert flatten({"_id": 1, "a": {"b": [1, 2], "c": "x"}}) == {"a.b[]": [1, 2], "a.c": ["x"]}
