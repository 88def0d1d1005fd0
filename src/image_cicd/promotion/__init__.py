"""The promotion: the task steps the state machines run, their payloads, checks,
versions, locks, errors and settings."""
