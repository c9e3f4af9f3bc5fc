"""Per-project price overrides: a project's own per-token prices for models matching a
pattern, from a date on, winning over genai-prices."""
