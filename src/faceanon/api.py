"""The library's front door: anonymize or restore a whole photo with typed settings.

    import faceanon
    key = faceanon.SecretKey.generate()
    anon = faceanon.anonymize_photo("photo.jpg", key)          # .image, .metadata, .boxes
    faceanon.save_photo(anon, "photo_anonymized.png")
    back = faceanon.restore_photo("photo_anonymized.png", key)

The photo goes the way ``faceanon anonymize`` takes it: faces found, their geometry sealed
under the key and opened again, each face anonymized in its crop and pasted back; the metadata
is what the command writes. Models and face finders are loaded once per process and reused
(:func:`backbone`, :func:`face_finder`). Errors are :class:`faceanon.errors.FaceanonError`
with the one-line message the command prints.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import numpy as np

from faceanon import loading
from faceanon.errors import FaceanonError
from faceanon.settings import Engine, OutputPolicy, Settings

if TYPE_CHECKING:
    from faceanon.backbones.base import Backbone
    from faceanon.folders.plan import Row
    from faceanon.media.io import Picture
    from faceanon.media.video import Summary
    from faceanon.methods.keyflip import Progress
    from faceanon.secure.container import Box
    from faceanon.secure.keys import SecretKey


@dataclass
class Photo:
    """A photo anonymized or restored: the image (uint8 RGB), the metadata to store with it
    (anonymized with a key; None otherwise), each face's box and the share of it replaced,
    and the model that did it (keyflip and hydro)."""

    image: np.ndarray
    metadata: str | None
    boxes: list[Box | None] = field(default_factory=list)
    coverage: list[float | None] = field(default_factory=list)
    latents: Callable[[np.ndarray], bytes] | None = field(default=None, repr=False)  # JPEG saves
    model: Backbone | None = field(default=None, repr=False)  # what anonymized or restored it


PhotoInput = np.ndarray | str | PurePath | bytes


def _read(photo: PhotoInput, name: str | None) -> tuple[str, Picture]:
    """(a name for messages, the picture): from a file, a file's bytes or an RGB array."""
    from faceanon.media.io import Picture, read_image

    if isinstance(photo, (str, PurePath)):
        return name or str(photo), read_image(Path(photo))
    if isinstance(photo, bytes):
        return name or "photo", read_image(Path(name or "photo"), photo)
    image = np.asarray(photo)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise FaceanonError(f"the photo must be uint8 RGB (height, width, 3), not {image.shape}")
    return name or "photo", Picture(image)


def anonymize_photo(
    photo: PhotoInput,
    key: SecretKey | None = None,
    settings: Settings | None = None,
    *,
    name: str | None = None,
    progress: Progress | None = None,
    max_restore_calls: int | None = None,
) -> Photo:
    """Every face of ``photo`` (an RGB array, a file, or a file's bytes) anonymized as
    ``settings`` say (default: keyflip with the default backbone, which needs ``key``).
    ``name``: the photo's name in messages (default: its path, or "photo");
    ``progress(done, total)``: network calls; ``max_restore_calls``: refuse (FaceanonError,
    nothing made) a photo whose restore would take more network calls than this (a service's
    bound, :func:`restore_photo`'s too)."""
    from faceanon.media import photos

    s = settings or Settings()
    label, picture = _read(photo, name)
    image = picture.image
    if s.aligned:
        raise FaceanonError("aligned crops: use faceanon.Anonymizer, or a folder of them")
    made = loading.tools(s, key)
    assert made.finder is not None
    faces = made.finder.find(image)
    anonymizer = made.anonymizer
    if max_restore_calls is not None and s.keyed and anonymizer is not None:
        steps, inversion = anonymizer.steps, anonymizer.inversion
        work = photos.restore_work(len(faces), anonymizer.backbone.name, steps, inversion)
        if work.calls > max_restore_calls:
            raise FaceanonError(
                f"{label}: its restore would take {work}, over this server's"
                f" {max_restore_calls}; use faceanon anonymize; nothing written"
            )
    [out] = photos.anonymize(
        [image],
        [faces],
        s.method,
        anonymizer=anonymizer,
        key=key if s.keyed else None,
        progress=progress,
        strength=s.strength,
        repeats=s.repeats,
        guide=s.guide,
        guide_scale=s.guide_scale,
    )
    model = None if anonymizer is None else anonymizer.backbone
    return Photo(out.image, out.metadata, out.boxes, out.coverage, out.latents, model)


def restore_photo(
    photo: PhotoInput,
    key: SecretKey,
    metadata: str | None = None,
    device: str = "auto",
    *,
    name: str | None = None,
    progress: Progress | None = None,
    max_calls: int | None = None,
) -> Photo:
    """``photo`` as it was before ``anonymize_photo`` (or ``faceanon anonymize``) with ``key``;
    ``metadata``: the text stored with it (read from the file when ``photo`` is a file or its
    bytes; and a JPEG's exact face data, which an array cannot carry; a lossy file without
    usable data is restored from its pixels, with a warning). A wrong key gives other faces,
    silently, as the command does. ``max_calls``: refuse a file that asks for more network
    calls than this (the file chooses its faces and steps)."""
    from faceanon.backbones.registry import MODELS
    from faceanon.errors import MetadataError
    from faceanon.media import latents, photos
    from faceanon.media.io import exact_data_need

    label, picture = _read(photo, name)
    image, stored = picture.image, picture.faceanon
    text = metadata if metadata is not None else stored
    if text is None:
        raise MetadataError(
            f"{label}: no faceanon metadata (stripped or re-saved?); restore the file faceanon"
            " wrote, as it was written"
        )
    meta = photos.read_metadata(label, text)
    model = loading.backbone(photos.check_backbone(label, meta, list(MODELS)), device)
    work = photos.restore_work(len(meta.faces), model.name, meta.steps, meta.inversion)
    if max_calls is not None and work.calls > max_calls:
        raise MetadataError(
            f"{label}: asks for {work}; this server restores at most {max_calls} calls"
            " a photo (restore it with faceanon deanonymize, which says what it does)"
        )
    size = model.image_size
    meta, geometry = photos.restore_geometry(
        label, image, meta, key, size, lambda: loading.face_finder(size=size)
    )
    need = exact_data_need(meta.method, image, meta.display)
    residuals, note = latents.exact_faces(
        label, picture.latents, picture.lossy, text, len(meta.faces), model, need
    )
    if note is not None:
        warnings.warn(note, stacklevel=2)
    [out] = photos.restore(
        [(image, meta, model, geometry)], key, progress=progress, residuals=[residuals]
    )
    return Photo(out.image, None, out.boxes, model=model)


def anonymize_video(
    src: str | PurePath,
    dst: str | PurePath,
    key: SecretKey | None = None,
    settings: Settings | None = None,
    overwrite: bool = False,
    lossless: bool = False,
    crf: int = 18,
) -> Summary:
    """Every tracked face of the video ``src`` anonymized into ``dst`` as ``faceanon
    anonymize`` does: H.264 at ``crf`` (0-51, lower is better) in ``dst``'s container (.mp4,
    .mov, .m4v, .mkv), or with ``lossless`` FFV1 in a ``.mkv``; keyflip's carry the metadata
    and the faces' exact latents.
    The summary says frames, faces, tracks and warnings."""
    from faceanon.media import video

    s = settings or Settings()
    if s.aligned:
        raise FaceanonError("aligned crops are photos, not videos")
    _check_crf(crf)
    made = loading.tools(s, key)
    key = key if s.keyed else None
    return video.anonymize_video(
        Path(src),
        Path(dst),
        s.method,
        made.finder,
        anonymizer=made.anonymizer,
        key=key,
        overwrite=overwrite,
        lossless=lossless,
        crf=crf,
    )


def _check_crf(crf: int) -> None:
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 51:
        raise FaceanonError(f"crf must be a whole number from 0 to 51, got {crf!r}")


def restore_video(
    src: str | PurePath,
    dst: str | PurePath,
    key: SecretKey,
    device: str = "auto",
    overwrite: bool = False,
    crf: int = 18,
) -> Summary:
    """The video ``anonymize_video`` (or the command) made, restored with ``key`` into
    ``dst`` (a ``.mkv``: lossless FFV1; .mp4, .mov, .m4v: H.264 at ``crf``)."""
    from faceanon.backbones.registry import MODELS
    from faceanon.media import photos, video

    _check_crf(crf)

    def backbone_for(path: Path, meta: Any) -> Backbone:
        return loading.backbone(photos.check_backbone(path, meta, list(MODELS)), device)

    return video.deanonymize_video(
        Path(src),
        Path(dst),
        key,
        backbone_for,
        lambda size: loading.face_finder(size=size),
        overwrite=overwrite,
        crf=crf,
    )


def save_photo(
    photo: Photo, path: str | PurePath, overwrite: bool = False, quality: int = 95
) -> None:
    """Write ``photo`` with its metadata, atomically, as the name says: PNG (lossless), or JPEG
    or WebP at ``quality`` carrying its faces' exact latents (they restore about as well as the
    PNG); an existing file is an error unless ``overwrite``."""
    from faceanon.media.io import write_image

    write_image(
        Path(path),
        photo.image,
        photo.metadata,
        overwrite=overwrite,
        quality=OutputPolicy(jpeg_quality=quality).jpeg_quality,
        latents=photo.latents,
    )


def anonymize_folder(
    inputs: str | PurePath | Sequence[str | PurePath],
    output: str | PurePath | None = None,
    key: SecretKey | None = None,
    settings: Settings | None = None,
    policy: OutputPolicy | None = None,
    engine: str | Engine = "local",
) -> Iterator[Row]:
    """The photos of ``inputs`` (files, or folders searched recursively) anonymized as
    ``faceanon anonymize`` does: each written as ``NAME_anonymized.png`` beside it, or under
    the folder ``output`` (the tree mirrored), atomically; existing outputs, faceless photos
    and EXIF as ``policy`` says (default: refused, not written, dropped). ``engine``:
    ``"local"``, ``"ray"`` or an :class:`Engine` (workers, cluster, batch size). Yields one
    :class:`faceanon.folders.jobs.Row` per input as it is done (``status``: written, no face, failed
    or already done; ``lines``: what the command prints); a bad file is a failed row, never
    an exception. Videos: :func:`anonymize_video`."""
    from functools import partial

    from faceanon.folders.jobs import AnonymizeJob

    s = settings or Settings()
    if s.keyed and key is None:
        raise FaceanonError(
            f"method {s.method} needs a key (faceanon keygen, or faceanon.SecretKey.generate())"
        )
    run = engine if isinstance(engine, Engine) else Engine(engine)
    key = key if s.keyed else None
    make_job = partial(AnonymizeJob, s, policy or OutputPolicy(), key, batch_size=run.batch_size)
    return _folder(inputs, output, "anonymized", make_job, policy, run)


def restore_folder(
    inputs: str | PurePath | Sequence[str | PurePath],
    key: SecretKey,
    output: str | PurePath | None = None,
    settings: Settings | None = None,
    policy: OutputPolicy | None = None,
    engine: str | Engine = "local",
) -> Iterator[Row]:
    """The photos :func:`anonymize_folder` (or the command) made, restored with ``key`` as
    ``faceanon deanonymize`` does (``NAME_deanonymized.png``); each file's metadata says the
    model and steps, ``settings`` only overrides the model, device and inversion. Rows as
    :func:`anonymize_folder`."""
    from functools import partial

    from faceanon.folders.jobs import DeanonymizeJob

    s = settings or Settings()
    run = engine if isinstance(engine, Engine) else Engine(engine)
    make_job = partial(DeanonymizeJob, s, policy or OutputPolicy(), key, batch_size=run.batch_size)
    return _folder(inputs, output, "deanonymized", make_job, policy, run)


def _folder(
    inputs: str | PurePath | Sequence[str | PurePath],
    output: str | PurePath | None,
    tag: str,
    make_job: Any,
    policy: OutputPolicy | None,
    engine: Engine,
) -> Iterator[Row]:
    from faceanon.folders.jobs import run
    from faceanon.folders.plan import plan

    given = [inputs] if isinstance(inputs, (str, PurePath)) else list(inputs)
    out = None if output is None else Path(output)
    entries, notes = plan([Path(p) for p in given], out, tag)
    rows = run(make_job, entries, policy or OutputPolicy(), engine)
    for row in rows:  # the plan's warnings (a folder without images, JPEG) with the first row
        row.lines[:0], notes = notes, []
        yield row
