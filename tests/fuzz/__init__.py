"""Fuzzing: generated input against every route of the HTTP API (docs/reliability.md)."""
