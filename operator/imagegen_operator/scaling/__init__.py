"""Autoscaling: queue lag (pure), the scaling policy (pure) and the one Kafka-touching reader."""
