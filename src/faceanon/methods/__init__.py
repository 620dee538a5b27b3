"""Anonymization methods."""
