"""Wire messages and records survive their transports unchanged."""

from imagegen_api import messages


def test_job_record_round_trips_through_a_redis_hash() -> None:
    result = messages.GenerationResult(
        request_id="r1",
        status="succeeded",
        images=[
            messages.ImageRef(
                key="ns/p/abc.png", url="http://x", width=64, height=64, seed=7, sha256="abc"
            )
        ],
        cache_hit=True,
    )
    rec = messages.JobRecord(
        request_id="r1", state="succeeded", updated_at=12.5, worker="w-0", attempts=1, result=result
    )
    as_bytes = {k.encode(): v.encode() for k, v in rec.to_hash().items()}
    assert messages.JobRecord.from_hash(as_bytes) == rec


def test_heartbeat_freshness_is_three_intervals() -> None:
    hb = messages.Heartbeat(
        worker="w", state="ready", ready=True, interval_seconds=5, updated_at=100, started_at=0
    )
    assert hb.is_fresh(115)
    assert not hb.is_fresh(115.1)


def test_request_ignores_unknown_fields_and_round_trips() -> None:
    req = messages.GenerationRequest.from_bytes(b'{"request_id":"a","prompt":"p","x":1}')
    assert req.request_id == "a"
    assert messages.GenerationRequest.from_bytes(req.to_bytes()) == req
