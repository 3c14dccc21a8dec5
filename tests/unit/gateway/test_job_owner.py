"""Per-key job records (app.owner_of / app.worker_record, JobRecord.owner): the gateway writes
the submitting key's name into the job record hash before it produces; GET /v1/generations/{id}
answers that key only. The route on a real gateway: tests/integration/gateway/test_gateway.py."""

from __future__ import annotations

from imagegen_api.messages import GenerationResult, JobRecord
from imagegen_gateway.app import owner_of, worker_record


def as_hash(record: JobRecord) -> dict[bytes, bytes]:
    return {k.encode(): v.encode() for k, v in record.to_hash().items()}


def test_the_owner_round_trips_through_the_hash() -> None:
    rec = JobRecord(request_id="gw-1", state="succeeded", updated_at=1.5, tier="fast",
                    owner="team-a", result=GenerationResult(request_id="gw-1",
                                                            status="succeeded"))
    raw = as_hash(rec)
    assert raw[b"owner"] == b"team-a"
    assert JobRecord.from_hash(raw) == rec
    assert owner_of(raw) == "team-a"


def test_a_record_without_owner_belongs_to_no_key() -> None:
    raw = as_hash(JobRecord(request_id="k-1", state="queued", updated_at=1.0))
    assert b"owner" not in raw and owner_of(raw) is None
    assert owner_of({}) is None


def test_only_the_owner_written_at_submit_is_no_record_yet() -> None:
    submitted = {b"owner": b"team-a"}
    assert owner_of(submitted) == "team-a"
    assert worker_record(submitted) is None
    # The worker's fields join the same hash; the owner stays.
    worked = {**submitted, b"request_id": b"gw-1", b"state": b"running",
              b"updated_at": b"2.0", b"attempts": b"1", b"worker": b"w-0"}
    rec = worker_record(worked)
    assert rec is not None and rec.state == "running" and rec.owner == "team-a"
