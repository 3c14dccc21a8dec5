"""imagegen_client: the client side of a generation pool, installed by a plain
`pip install imagegen-operator` (no torch, no kopf).

client.py   ImagegenClient: produce requests to a pool's tier topics, read its results topic,
            read job records from Redis, download images through their presigned URLs
cli.py      the `imagegen` command (submit, status), built on client.py

Depends only on the contract (imagegen_api) and aiokafka, redis, aiohttp.
"""

from .client import ImagegenClient, new_request_id, read_status

__all__ = ["ImagegenClient", "new_request_id", "read_status"]
