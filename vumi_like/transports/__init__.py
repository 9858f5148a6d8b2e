"""Transports: workers that face providers and turn their results into events."""
