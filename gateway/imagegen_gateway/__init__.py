"""The HTTP gateway of one generation pool: an OpenAI-compatible images API
(`POST /v1/images/generations`) and the async jobs API (`POST /v1/generations` → 202,
`GET /v1/generations/{id}`) in front of the pool's Kafka tier topics. Imports the contract
(imagegen_api) only: never the worker or the operator (import-linter).

Modules: settings (configuration), keys (API keys file), requests (pure: HTTP body → request
message, OpenAI shapes, errors), ratelimit (token bucket in Redis), fanout (results topic →
waiting requests), webhooks (pure: signature, backoff, SSRF check) and delivery (the
results-topic consumer group that calls them), shedding (pure: 503 decision) and backlog (its
figures), metrics, app (FastAPI routes), main (uvicorn).
"""
