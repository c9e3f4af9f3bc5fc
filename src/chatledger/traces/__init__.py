"""Agent automation traces: one trace per thread (run), its node executions as rows."""
