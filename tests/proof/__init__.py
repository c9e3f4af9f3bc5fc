"""Proof suites: each tries hard to break one of chatledger's promises (docs/reliability.md)."""
