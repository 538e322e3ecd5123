"""`dbfleet repo key ...` and `dbfleet backups list` under issue 14: empty and readable keys refused,
data-key rotation end to end, a damaged manifest listed and marked; dumper clients closed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from engines.backup.dumpers.base import RestoreOptions, Target
from engines.backup.dumpers.elasticsearch import ElasticsearchDumper
from engines.backup.dumpers.mongodb import MongoDumper
from engines.backup.engine import spool
from tests.conftest import db
from tests.unit.test_backup_driver_streams import FakeElasticsearch, FakeMongoClient, _backup
from tests.unit.test_cli_backups import _flat, _run, setup  # noqa: F401 - the fixture

pytestmark = pytest.mark.usefixtures("setup")


@pytest.fixture(autouse=True)
def _fast_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Key slots record their scrypt parameters; a cheap setting keeps these tests fast."""
    from engines.backup import crypto

    monkeypatch.setattr(crypto, "SCRYPT", {"n": 2**10, "r": 8, "p": 1})


def test_key_add_refuses_an_empty_key_and_a_key_file_others_can_read(setup: Path,  # noqa: F811
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    assert _run("repo", "init")[0] == 0
    monkeypatch.setenv("H2_EMPTY_KEY", "")
    code, out = _run("repo", "key", "add", "--new-key-env", "H2_EMPTY_KEY")
    assert code != 0 and "the new key is empty" in out
    loose = setup / "loose.key"
    loose.write_text("a-new-key\n")
    os.chmod(loose, 0o644)
    code, out = _run("repo", "key", "add", "--new-key-file", str(loose))
    assert code != 0 and f"chmod600{loose}" in _flat(out)
    for command in (["repo", "key", "rotate", "--new-key-file", str(loose)],
                    ["repo", "key", "rotate", "--new-data-key", "--new-key-env", "H2_EMPTY_KEY"]):
        assert _run(*command)[0] != 0
    slots = _flat(_run("repo", "key", "list")[1])
    assert "initial" in slots and "file" not in slots and "H2_EMPTY" not in slots  # nothing was added


def test_rotate_with_a_new_data_key_keeps_old_backups_readable(setup: Path) -> None:  # noqa: F811
    assert _run("backups", "run", "app", "--local")[0] == 0
    new_key = setup / "new.key"
    new_key.write_text("h2-rotated-key\n")
    os.chmod(new_key, 0o600)
    code, out = _run("repo", "key", "rotate", "--new-data-key", "--new-key-file", str(new_key))
    assert code == 0 and "new data key 1" in out and "removed key slot" in out
    assert _run("backups", "list")[0] != 0  # the configured (old) key no longer opens the repository
    (setup / "key").write_text("h2-rotated-key\n")
    assert _run("backups", "run", "app", "--local")[0] == 0
    code, out = _run("backups", "verify", "app", "--read-data", "--local")
    assert code == 0 and "ok" in out


def test_backups_list_marks_a_damaged_manifest_and_lists_the_others(setup: Path) -> None:  # noqa: F811
    for _ in range(2):
        assert _run("backups", "run", "app", "--local")[0] == 0
    manifests = sorted((setup / "repo" / "backups" / "app").iterdir())
    data = bytearray(manifests[0].read_bytes())
    data[len(data) // 2] ^= 0x20
    manifests[0].write_bytes(bytes(data))
    code, out = _run("backups", "list")
    flat = _flat(out)
    assert code == 0
    assert manifests[0].name in flat and "DAMAGED" in flat and manifests[1].name in flat
    assert "damagedbackup" in flat and "authenticationfailed" in flat


class ClosingMongo(FakeMongoClient):
    """MOCK (as FakeMongoClient) that counts close() calls."""

    closed = 0

    def close(self) -> None:
        type(self).closed += 1


class ClosingElasticsearch(FakeElasticsearch):
    """MOCK (as FakeElasticsearch) that counts close() calls."""

    closed = 0

    def close(self) -> None:
        type(self).closed += 1


def test_mongodb_and_elasticsearch_dumpers_close_their_clients(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client = ClosingMongo()
    client["music"].create_collection("users")
    client["music"]["users"].insert_many([{"_id": i} for i in range(10)])
    monkeypatch.setattr(MongoDumper, "_client", lambda self, target=None: client)
    source: Any = db("m", kind="mongodb", host="fake", dbname="music")
    dumper = MongoDumper(source, None, tmp_path)
    repo, manifest = _backup(tmp_path / "m", dumper)
    (tmp_path / "spool").mkdir()
    files = spool(repo, manifest, tmp_path / "spool")
    dumper.restore(files, manifest, Target(source, None), RestoreOptions(target_dbname="copy"))
    dumper.count_rows(Target(source, None), RestoreOptions(target_dbname="copy"))
    assert ClosingMongo.closed == 3  # backup, restore, count: one client each, each closed
    es = ClosingElasticsearch()
    es.store["t"] = {"meta": {"mappings": {}, "settings": {"index": {}}, "aliases": {}}, "docs": {"1": {"a": 1}}}
    monkeypatch.setattr(ElasticsearchDumper, "_client", lambda self, target=None: es)
    monkeypatch.setattr("engines.backup.dumpers.elasticsearch._helpers", lambda: es)
    search: Any = db("s", kind="elasticsearch", host="fake")
    es_dumper = ElasticsearchDumper(search, None, tmp_path)
    repo, manifest = _backup(tmp_path / "e", es_dumper)
    (tmp_path / "spool2").mkdir()
    es_dumper.restore(spool(repo, manifest, tmp_path / "spool2"), manifest, Target(search, None),
                      RestoreOptions(target_dbname="copy-"))
    assert ClosingElasticsearch.closed == 2
