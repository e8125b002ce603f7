"""Adapters of the node's ports: kafka_log and redis_store (production),
sqlite_log and memory_store (embedded). Import the one you need."""
