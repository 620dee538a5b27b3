"""The exceptions faceanon raises for problems a user can fix.

Every message is one line that names the file (or model) and the problem; the CLI prints it as is.
"""


class FaceanonError(Exception):
    """Base class: something about the input, key or model is wrong."""


class KeyFileError(FaceanonError):
    """A key file is missing, malformed, mistyped or of the wrong length."""


class ImageError(FaceanonError):
    """An image cannot be read, has the wrong size, or cannot be written."""


class VideoError(FaceanonError):
    """A video cannot be read or written (not a video, no video stream, a broken stream)."""


class MetadataError(FaceanonError):
    """An image lacks faceanon metadata, or the metadata is damaged."""


class ModelUnavailableError(FaceanonError):
    """A backbone's weights cannot be found or loaded."""


class OutputExistsError(ImageError):
    """An output file exists already (perhaps written a moment ago by another run)."""


def first_line(exc: BaseException, typed: bool = True) -> str:
    """One line for an error nobody foresaw: ``Type: first line of its message`` (``typed``),
    or the first line alone (the type's name if there is none)."""
    text = (str(exc).strip().splitlines() or [""])[0][:200]
    if not typed:
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}"
