"""Integrations with training frameworks (optional extras; imported on demand)."""
