"""Every name shared by the operator, the workers and clients: API group, topics, Redis keys,
labels, child object names and environment variables. One module so they cannot drift apart.

Pure functions of (namespace, pool, …); imported by both sides and by the tests.
"""

from __future__ import annotations

import hashlib

GROUP = "imagegen.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "imagegen"

IMAGEMODEL_KIND = "ImageModel"
IMAGEMODEL_PLURAL = "imagemodels"
GENERATIONPOOL_KIND = "GenerationPool"
GENERATIONPOOL_PLURAL = "generationpools"

FIELD_MANAGER = "imagegen-operator"
FINALIZER = "imagegen.dev/finalizer"

DEFAULT_TIERS: tuple[str, ...] = ("turbo", "fast", "relax")

# --- Kafka ----------------------------------------------------------------------------------


def _prefix(namespace: str, pool: str) -> str:
    return f"imagegen.{namespace}.{pool}"


def tier_topic(namespace: str, pool: str, tier: str) -> str:
    """Topic a client produces requests of one priority tier to."""
    return f"{_prefix(namespace, pool)}.{tier}"


def results_topic(namespace: str, pool: str) -> str:
    return f"{_prefix(namespace, pool)}.results"


def dlq_topic(namespace: str, pool: str) -> str:
    return f"{_prefix(namespace, pool)}.dlq"


# Size contract of a request message (its JSON value): workers refuse a longer one by byte length
# before parsing (a `rejected` result); producers (the `imagegen` client, gateways) set their
# max request size to MAX_MESSAGE_BYTES, and the operator sets each tier topic's
# `max.message.bytes` to the same, so what a producer accepts the broker accepts too. The headroom
# over MAX_REQUEST_BYTES covers the key, headers and record-batch overhead.
MAX_REQUEST_BYTES = 1024 * 1024
MAX_MESSAGE_BYTES = MAX_REQUEST_BYTES + 64 * 1024


def consumer_group(namespace: str, pool: str) -> str:
    """The one consumer group all workers of a pool (warm and cold) share."""
    return _prefix(namespace, pool)


def webhook_group(namespace: str, pool: str) -> str:
    """The pool's gateways' consumer group on the results topic: each result to one replica,
    which delivers its webhook (gateway/imagegen_gateway/delivery.py)."""
    return f"{consumer_group(namespace, pool)}.gateway-webhooks"


def tier_of_topic(topic: str) -> str:
    """Tier name from a tier topic (last dot-separated part)."""
    return topic.rsplit(".", 1)[-1]


# --- Redis ----------------------------------------------------------------------------------


def cache_key(namespace: str, pool: str, digest: str) -> str:
    """Image cache entry of one pool: it points into that pool's objects (see object_key), so
    another pool must never find it (it could not presign it, and must not read it)."""
    return f"imagegen:cache:{namespace}/{pool}/{digest}"


def job_key(namespace: str, pool: str, request_id: str) -> str:
    """Job record of one request id in one pool. Ids are the clients' own: two pools (tenants)
    sharing a Redis must never see each other's records. Lives in the job store (workerconfig
    JobStoreSettings), apart from the evictable cache."""
    return f"imagegen:job:{namespace}/{pool}/{request_id}"


def accepted_key(namespace: str, pool: str, request_id: str) -> str:
    """Set by a gateway (job store, TTL) when it accepted a request into the queue: until a
    worker writes the job record, GET /v1/generations/<id> answers `queued` from it."""
    return f"imagegen:gateway:accepted:{namespace}/{pool}/{request_id}"


def webhook_key(namespace: str, pool: str, request_id: str) -> str:
    """A gateway-accepted request's webhook (job store hash: url, key, state, attempts)."""
    return f"imagegen:gateway:webhook:{namespace}/{pool}/{request_id}"


def rate_limit_key(namespace: str, pool: str, key_name: str) -> str:
    """A gateway API key's token bucket (Redis hash: tokens, ts), shared by the pool's gateways."""
    return f"imagegen:gateway:ratelimit:{namespace}/{pool}/{key_name}"


def workers_key(namespace: str, pool: str) -> str:
    """Redis hash of heartbeats: one field per worker pod, JSON value."""
    return f"imagegen:workers:{namespace}/{pool}"


# --- S3 -------------------------------------------------------------------------------------


def object_prefix(namespace: str, pool: str) -> str:
    """Every object of one pool lives below this prefix; a worker presigns nothing else."""
    return f"{namespace}/{pool}/"


def object_key(namespace: str, pool: str, digest: str, ext: str) -> str:
    return f"{object_prefix(namespace, pool)}{digest}.{ext}"


def answer_key(namespace: str, pool: str, request_id: str) -> str:
    """The answer manifest of one request id: the first succeeded result stored for it, created
    only if absent (S3 conditional write). It keeps "one id, one set of images" when the job
    store is unreachable. Hashed: ids may hold '.' and ':' that some S3 servers refuse as keys."""
    digest = hashlib.sha256(request_id.encode()).hexdigest()
    return f"{object_prefix(namespace, pool)}answers/{digest}.json"


# --- Kubernetes children and labels ---------------------------------------------------------

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_POOL = "imagegen.dev/pool"
LABEL_ROLE = "imagegen.dev/role"  # warm | cold
ANNOTATION_CONFIG_HASH = "imagegen.dev/config-hash"
# On a prefetch Job: the ImageModel spec it downloads for (a new spec replaces the Job).
LABEL_SPEC_HASH = "imagegen.dev/spec-hash"

ROLE_WARM = "warm"
ROLE_COLD = "cold"
ROLES: tuple[str, ...] = (ROLE_WARM, ROLE_COLD)

# Node placement defaults: spot capacity is labelled and tainted; cold workers tolerate it.
LABEL_CAPACITY_TYPE = "imagegen.dev/capacity-type"
CAPACITY_SPOT = "spot"
CAPACITY_ON_DEMAND = "on-demand"
TAINT_SPOT = "imagegen.dev/spot"


def config_map_name(pool: str) -> str:
    return f"{pool}-worker-config"


def deployment_name(pool: str, role: str) -> str:
    return f"{pool}-{role}"


def metrics_service_name(pool: str) -> str:
    return f"{pool}-metrics"


def gateway_name(pool: str) -> str:
    """The gateway's Deployment, Service and PodDisruptionBudget."""
    return f"{pool}-gateway"


def gateway_url(namespace: str, pool: str) -> str:
    """The gateway Service's in-cluster URL (status.gateway.url)."""
    return f"http://{gateway_name(pool)}.{namespace}.svc:{GATEWAY_HTTP_PORT}"


def pdb_name(pool: str) -> str:
    return f"{pool}-warm"


def prefetch_job_name(model: str) -> str:
    return f"{model}-prefetch"


def pool_labels(pool: str) -> dict[str, str]:
    """Labels every child of a pool carries (selector-safe: never changes for a pool)."""
    return {
        LABEL_NAME: "imagegen-worker",
        LABEL_INSTANCE: pool,
        LABEL_MANAGED_BY: "imagegen-operator",
        LABEL_POOL: pool,
    }


def worker_selector(pool: str, role: str) -> dict[str, str]:
    return {LABEL_POOL: pool, LABEL_ROLE: role}


# --- Worker process contract ----------------------------------------------------------------

WORKER_CONFIG_FILE = "worker.json"
WORKER_CONFIG_DIR = "/etc/imagegen"
WORKER_HTTP_PORT = 8080
MODEL_CACHE_DIR = "/models"
# Where workers find the contentCredentials Secret (tls.crt, tls.key).
CONTENT_CREDENTIALS_DIR = "/etc/imagegen-content-credentials"
ENV_CONTENT_CREDENTIALS_DIR = "IMAGEGEN_CONTENT_CREDENTIALS_DIR"

ENV_WORKER_CONFIG = "IMAGEGEN_WORKER_CONFIG"  # path to the rendered worker.json
ENV_HTTP_PORT = "IMAGEGEN_HTTP_PORT"
ENV_KAFKA_BOOTSTRAP = "IMAGEGEN_KAFKA_BOOTSTRAP"
ENV_REDIS_URL = "IMAGEGEN_REDIS_URL"
# Job records' store when it is not the cache's Redis (see workerconfig.JobStoreSettings).
ENV_JOBS_REDIS_URL = "IMAGEGEN_JOBS_REDIS_URL"
ENV_S3_ENDPOINT = "IMAGEGEN_S3_ENDPOINT"
ENV_MODEL_CACHE = "IMAGEGEN_MODEL_CACHE"
ENV_POD_NAME = "POD_NAME"
ENV_POD_NAMESPACE = "POD_NAMESPACE"
ENV_ROLE = "IMAGEGEN_ROLE"
# The gateway (imagegen_gateway): its own settings file and the API keys file (from a Secret).
ENV_GATEWAY_CONFIG = "IMAGEGEN_GATEWAY_CONFIG"
ENV_GATEWAY_KEYS = "IMAGEGEN_GATEWAY_KEYS"
ENV_GATEWAY_SETTINGS = "IMAGEGEN_GATEWAY_SETTINGS"  # JSON: spec.gateway's knobs
GATEWAY_HTTP_PORT = 8000
GATEWAY_KEYS_DIR = "/etc/imagegen-keys"
GATEWAY_KEYS_FILE = "keys.json"  # the key of the auth Secret
