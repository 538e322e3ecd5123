"""The coordination store on a real Redis (:6379 db 9, h9 prefix): lease, fencing token, observers."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from engines.dr.auto import verdict
from engines.dr.context import DRContext
from engines.dr.coord import Coordinator
from engines.dr.models import DRConfiguration
from tests.servers import require


@pytest.fixture()
def coord() -> Iterator[Coordinator]:
    require("redis")
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=9)
    prefix = f"h9:drc:{uuid.uuid4().hex[:8]}:"
    yield Coordinator(client, prefix)
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)


def test_one_lease_at_a_time_and_tokens_only_grow(coord: Coordinator) -> None:
    first = coord.acquire("g", "a", 30)
    assert first is not None and coord.acquire("g", "b", 30) is None
    coord.release(first)
    second = coord.acquire("g", "b", 30)
    assert second is not None and second.token > first.token


def test_only_the_current_token_claims_a_promotion_once(coord: Coordinator) -> None:
    old = coord.acquire("g", "slow", 0.2)
    assert old is not None
    time.sleep(0.4)  # the slow observer's lease expires
    new = coord.acquire("g", "fast", 30)
    assert new is not None
    assert not coord.claim_promotion(old)
    assert coord.claim_promotion(new) and not coord.claim_promotion(new)


def test_racing_acquirers_get_one_lease(coord: Coordinator) -> None:
    barrier, won = threading.Barrier(8), []

    def race(i: int) -> None:
        barrier.wait()
        lease = coord.acquire("g", f"w{i}", 30)
        if lease and coord.claim_promotion(lease):
            won.append(i)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1


def _ctx(coord: Coordinator, **cfg: object) -> DRContext:
    dr = DRConfiguration(dr_id="g", primary_site="p", secondary_sites=["s"], failover_after=10, **cfg)
    return DRContext(cfg=dr, resolve=lambda i: None, coord=coord, state_dir=Path("/nonexistent"))  # type: ignore[arg-type,return-value]


def test_failover_needs_two_observers_down_for_failover_after(coord: Coordinator) -> None:
    ctx = _ctx(coord)
    coord.report("g", "w1", False, now=100)
    coord.report("g", "w1", False, now=111)
    assert not verdict(ctx, 111).fail_over  # one observer is not enough
    coord.report("g", "w2", False, now=105)
    coord.report("g", "w2", False, now=111)
    assert not verdict(ctx, 111).fail_over  # w2 has not waited failover_after yet
    assert verdict(ctx, 115).fail_over
    coord.report("g", "w3", True, now=116)  # any observer that still reaches the primary vetoes
    decision = verdict(ctx, 116)
    assert not decision.fail_over and "reachable from w3" in decision.reason


def test_stale_down_reports_do_not_count(coord: Coordinator) -> None:
    ctx = _ctx(coord)
    coord.report("g", "w1", False, now=100)
    coord.report("g", "w2", False, now=100)
    assert verdict(ctx, 111).fail_over
    assert not verdict(ctx, 200).fail_over  # both stopped reporting long ago
