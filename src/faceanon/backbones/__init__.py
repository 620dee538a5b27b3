"""Diffusion backbones: the protocol (``base``), the registry and the loaders."""
