"""The event log, the source of truth: event schema (:mod:`.events`), ports
(:mod:`.ports`), Kafka (:mod:`.kafka` settings and topic administration,
:mod:`.kafka_log` reader, writer and admin), the embedded SQLite log
(:mod:`.sqlite_log`), and the settings every event topic gets (:mod:`.config`)."""
