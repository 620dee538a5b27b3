"""Deterministic DDIM (eta = 0) in both directions (``ddim``, ``loops``, ``schedule``), and
the DDIM settings as the command line and the metadata name them (``ddim_settings``, which
imports no torch)."""
