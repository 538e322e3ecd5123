"""One contract test for every storage backend this machine can run: filesystem and S3 (moto server, HTTP)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from engines.errors import ObjectMissing, StorageError
from engines.storage import Storage
from engines.storage.filesystem import FilesystemStorage
from engines.storage.s3 import S3Storage
from tests.integration.s3server import moto_s3

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3() as url:
        yield url


@pytest.fixture(params=["filesystem", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "filesystem":
        yield FilesystemStorage(tmp_path / "store")
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        store = S3Storage(f"s3://contract-{tmp_path.name.lower().replace('_', '-')[:40]}/some/prefix",
                          endpoint_url=endpoint)
        store.prepare()  # creates the bucket
        yield store
        store.close()


def test_put_get_list_delete(storage: Storage) -> None:
    storage.put("data/ab/abc", b"x" * 10)
    storage.put("data/cd/cde", b"y")
    storage.put("config", b"{}")
    storage.put("data/ab/abc", b"z" * 3)  # overwrite
    assert storage.get("data/ab/abc") == b"zzz"
    assert sorted((o.key, o.size) for o in storage.list("data/")) == [("data/ab/abc", 3), ("data/cd/cde", 1)]
    assert {o.key for o in storage.list()} == {"config", "data/ab/abc", "data/cd/cde"}
    storage.delete("data/ab/abc")
    storage.delete("data/ab/abc")  # idempotent
    assert not storage.exists("data/ab/abc") and storage.exists("config")
    with pytest.raises(ObjectMissing, match="data/ab/abc is missing"):
        storage.get("data/ab/abc")


def test_put_new_is_exclusive_under_races(storage: Storage) -> None:
    winners: list[int] = []

    def race(i: int) -> None:
        if storage.put_new("keys/slot", str(i).encode()):
            winners.append(i)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and storage.get("keys/slot") == str(winners[0]).encode()


def test_hostile_keys_are_refused(storage: Storage) -> None:
    with pytest.raises(StorageError, match="refusing object key"):
        storage.put("../../escape", b"x")


def test_s3_errors_name_the_target_not_credentials(s3_endpoint: str) -> None:
    store = S3Storage("s3://no-such-bucket-here/p", endpoint_url=s3_endpoint, access_key="AKIAEXAMPLE",
                      secret_key="canary-s3-secret-DO-NOT-LEAK")
    with pytest.raises(StorageError) as err:
        store.put("x", b"1")
    assert "no-such-bucket-here" in str(err.value) and "canary-s3-secret" not in str(err.value)


def test_unreachable_s3_endpoint_is_a_clear_error(closed_port: int) -> None:
    store = S3Storage("s3://b/p", endpoint_url=f"http://127.0.0.1:{closed_port}")
    store.client.meta.config.retries = {"max_attempts": 1}
    with pytest.raises(StorageError, match=r"s3://b/p/ at http://127.0.0.1"):
        list(store.list("data/"))
