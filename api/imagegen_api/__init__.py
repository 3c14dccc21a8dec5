"""imagegen_api: the contract shared by the operator, the workers and clients.

CR spec types with defaults (specs), wire messages (messages), names of topics, keys, labels and
children (naming), the worker configuration schema (workerconfig). No torch, no kopf runtime,
no Kubernetes or Kafka client.
"""

from . import messages, naming, specs, workerconfig

__all__ = ["messages", "naming", "specs", "workerconfig"]
