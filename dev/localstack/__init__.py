"""The local stack behind `dev/stack`: real Kubernetes control plane, KWOK GPU nodes, Kafka,
Redis, MinIO and the local pod runner as plain processes on 127.0.0.1. Standard library only,
so it runs before the project's virtual environment exists."""
