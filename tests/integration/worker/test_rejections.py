"""Every rejection class answered (status, code, field, limit) and its offset committed.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from imagegen_client import new_request_id

from tests.integration.worker.harness import (
    RUN,
    Pool,
    Worker,
)

pytestmark = pytest.mark.integration


REJECTIONS: list[tuple[dict[str, Any], str, str, str | None]] = [
    ({"width": 100}, "rejected", "invalid_field", "width"),
    ({"height": 32}, "rejected", "invalid_field", "height"),
    ({"width": 256, "height": 256}, "rejected", "limit_exceeded", "width,height"),
    ({"steps": 9}, "rejected", "limit_exceeded", "steps"),
    ({"num_images": 3}, "rejected", "limit_exceeded", "num_images"),
    ({"prompt": "word " * 30}, "rejected", "limit_exceeded", "prompt"),
    ({"sampler": "heun"}, "rejected", "invalid_field", "sampler"),
    ({"output_format": "gif"}, "rejected", "invalid_field", "output_format"),
    ({"tier": "ultra"}, "rejected", "unknown_tier", "tier"),
    ({"model": "sd99"}, "rejected", "unknown_model", "model"),
    ({"guidance": 80}, "rejected", "invalid_field", "guidance"),
    ({"seed": -4}, "rejected", "invalid_field", "seed"),
    ({"deadline": 1.0}, "expired", "deadline_exceeded", "deadline"),
    ({"prompt": "a Forbidden  Phrase here"}, "blocked", "blocked", "prompt"),
]


class TestRejections:
    async def test_every_rejection_class_is_answered_and_committed(
        self, shared: tuple[Pool, Worker]
    ) -> None:
        pool, worker = shared
        bodies: dict[str, tuple[str, str, str | None]] = {}
        async with pool.client() as client:
            for overrides, status, code, fld in REJECTIONS:
                rid = new_request_id("rej")
                body = {"request_id": rid, "prompt": "a fox", **overrides}
                bodies[rid] = (status, code, fld)
                await client.submit_raw("fast", json.dumps(body).encode(), rid.encode())
            await client.submit_raw("relax", b"{not json", f"rej-badjson-{RUN}".encode())
            await client.submit_raw("turbo", json.dumps({"prompt": "no id"}).encode(),
                                    f"rej-noid-{RUN}".encode())
            noprompt = f"rej-noprompt-{RUN}"
            await client.submit_raw("fast", json.dumps({"request_id": noprompt}).encode(),
                                    noprompt.encode())
            bodies[f"rej-badjson-{RUN}"] = ("rejected", "invalid_json", None)
            bodies[f"rej-noid-{RUN}"] = ("rejected", "missing_field", "request_id")
            bodies[f"rej-noprompt-{RUN}"] = ("rejected", "missing_field", "prompt")
            results = await client.wait(bodies, within=60)
        assert set(results) == set(bodies)
        for rid, (status, code, fld) in bodies.items():
            res = results[rid]
            assert res.error is not None, rid
            assert (res.status, res.error.code, res.error.field) == (status, code, fld), res
            assert res.error.limit, res
            assert not res.images
        assert await pool.wait_lag_zero() == 0
        assert worker.metric("imagegen_requests_total", status="rejected") >= 14

