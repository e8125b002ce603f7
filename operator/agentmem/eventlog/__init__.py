"""Kafka, the event log: client settings and topic administration (:mod:`.kafka`),
and the settings every event topic gets (:mod:`.config`)."""
