"""Two pools sharing one Redis and one bucket never answer each other (issue 17, isolation),
through the worker's real stages (tests/integration/worker/stages.py) on the real stack.

Pool B sending an id (and the very same seeded parameters) that pool A answered gets its own
record, its own generation and an object under its own prefix: not A's record replayed, not a
hit on A's cache entry, not a URL to A's object signed with B's credentials.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from imagegen_worker.storage import ForeignObject, ObjectStore

from tests.integration.worker.harness import NAMESPACE, make_pool
from tests.integration.worker.stages import RecordingPublisher, Stages, StagesEnv

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool_b(stack: Any, package_tmp: Path, stages_env: StagesEnv,
                 st: Stages) -> AsyncIterator[Stages]:
    """A second pool's stages on the same Redis and the same bucket as `st`, same id prefix."""
    pool = await make_pool(stack, package_tmp, "stages-b")
    config = pool.config.model_copy(update={"storage": stages_env.pool.config.storage})
    pool.config = config
    kafka = config.kafka
    publisher = RecordingPublisher(stack.kafka_bootstrap, results_topic=kafka.results_topic,
                                   dlq_topic=kafka.dlq_topic, client_id="stages-b")
    await publisher.start()
    store = ObjectStore(config.storage.model_copy(update={"endpoint": stack.s3_endpoint}),
                        NAMESPACE, pool.name)
    b = Stages(pool, stages_env.redis, publisher, store, prefix=st.prefix)
    b.runner.revision = st.runner.revision  # the same model: the same cache digests
    try:
        yield b
    finally:
        await publisher.stop()


async def test_the_same_id_in_two_pools_gets_two_independent_answers(st: Stages,
                                                                     pool_b: Stages) -> None:
    body = {"request_id": "same", "prompt": "a lighthouse", "seed": 5}
    await st.feed(body)
    await st.run_all()
    [ra] = st.answers("same")
    assert st.store.bucket == pool_b.store.bucket  # one bucket, one set of credentials

    await pool_b.feed(body)
    await pool_b.run_all()
    [rb] = pool_b.answers("same")
    assert rb.status == "succeeded" and not rb.cache_hit, rb  # not A's record, not A's cache
    assert pool_b.runner.calls == [1]
    assert all(i.key.startswith(f"{NAMESPACE}/{pool_b.pool.name}/") for i in rb.images), rb
    assert all(i.key.startswith(f"{NAMESPACE}/{st.pool.name}/") for i in ra.images), ra
    data = await pool_b.fetch(rb.images[0].url)
    assert hashlib.sha256(data).hexdigest() == rb.images[0].sha256
    assert (await pool_b.record("same"))["state"] == "succeeded"
    assert (await st.record("same"))["result"] != (await pool_b.record("same"))["result"]
    with pytest.raises(ForeignObject):
        pool_b.store.presign(ra.images[0].key)
