"""Rebuilding the embedded face models (faceanon fit-prior, faceanon fit-net)."""
