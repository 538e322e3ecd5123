"""MongoDB and Elasticsearch round trips against real servers, when the environment names one.

These servers cannot be installed on the development machines; docker-compose starts both.
Set DBFLEET_TEST_MONGODB_URL=mongodb://127.0.0.1:27017 / DBFLEET_TEST_ELASTICSEARCH_URL=http://127.0.0.1:9200.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from engines.backup.dumpers.base import RestoreOptions, Target
from engines.backup.engine import restore_backup, run_backup
from engines.backup.repository import Repository
from engines.storage.filesystem import FilesystemStorage
from tests.conftest import db

pytestmark = pytest.mark.integration
MONGO = os.environ.get("DBFLEET_TEST_MONGODB_URL")
ES = os.environ.get("DBFLEET_TEST_ELASTICSEARCH_URL")


@pytest.mark.skipif(not MONGO, reason="no MongoDB here: set DBFLEET_TEST_MONGODB_URL to run this round trip")
def test_mongodb_round_trip(tmp_path: Path) -> None:
    import pymongo

    name = f"dbfleet_t_{secrets.token_hex(3)}"
    client: pymongo.MongoClient = pymongo.MongoClient(MONGO)
    client[name]["users"].insert_many([{"i": i, "email": f"u{i}@example.com"} for i in range(3000)])
    client[name]["users"].create_index("email", unique=True)
    source = db("events", kind="mongodb", dsn=MONGO, dbname=name)
    repo = Repository.init(FilesystemStorage(tmp_path / "repo"), "k")
    try:
        result = run_backup(repo, source, workdir=tmp_path)
        assert result["dump"]["row_counts"] == {"users": 3000}
        restore_backup(repo, source, Target(source, None), options=RestoreOptions(target_dbname=name + "_r"),
                       spool_dir=tmp_path)
        restored = client[name + "_r"]["users"]
        assert restored.count_documents({}) == 3000
        assert "email_1" in restored.index_information()
    finally:
        client.drop_database(name)
        client.drop_database(name + "_r")


@pytest.mark.skipif(not ES, reason="no Elasticsearch here: set DBFLEET_TEST_ELASTICSEARCH_URL to run this round trip")
def test_elasticsearch_round_trip(tmp_path: Path) -> None:
    from elasticsearch import Elasticsearch, helpers

    index = f"dbfleet-t-{secrets.token_hex(3)}"
    es = Elasticsearch(ES)
    es.indices.create(index=index, mappings={"properties": {"title": {"type": "keyword"}}})
    helpers.bulk(es, ({"_index": index, "_id": str(i), "_source": {"title": f"t{i}"}} for i in range(2000)),
                 refresh=True)
    source = db("search", kind="elasticsearch", dsn=ES, dbname=index)
    repo = Repository.init(FilesystemStorage(tmp_path / "repo"), "k")
    try:
        assert run_backup(repo, source, workdir=tmp_path)["dump"]["row_counts"] == {index: 2000}
        restore_backup(repo, source, Target(source, None), options=RestoreOptions(target_dbname="r-"),
                       spool_dir=tmp_path)
        assert es.count(index="r-" + index)["count"] == 2000
    finally:
        es.indices.delete(index=f"{index},r-{index}", ignore_unavailable=True)
