"""The local web app (``faceanon serve``, faceanon.apps.web.app): needs the ``web`` extra."""


def missing_extra() -> str | None:
    """Why the web app cannot start, if its packages are missing."""
    try:
        import fastapi  # noqa: F401
        import multipart  # noqa: F401  (python-multipart, for uploads)
        import uvicorn  # noqa: F401
    except ImportError:
        return "faceanon serve needs the web extra: pip install 'faceanon[web]'"
    return None
