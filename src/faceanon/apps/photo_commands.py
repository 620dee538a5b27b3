"""``faceanon anonymize`` and ``deanonymize``: the options made typed settings, the photos
and videos among the inputs given to the library (:mod:`faceanon.folders`,
:mod:`faceanon.media.video`), one line per file and a summary printed."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faceanon.apps.options import settings_from
from faceanon.apps.terminal import EXIT_OK, EXIT_SOME_FAILED, Progress, load_key, say
from faceanon.errors import FaceanonError

if TYPE_CHECKING:
    from faceanon.settings import OutputPolicy


def _policy(args: argparse.Namespace) -> OutputPolicy:
    from faceanon.settings import OutputPolicy

    return OutputPolicy(
        args.overwrite, args.skip_existing, args.write_faceless, args.keep_metadata, args.quality
    )


def _process(args: argparse.Namespace, tag: str, make_job: Callable[[Any], Any]) -> int:
    """The photos: every input's output planned and checked, the job run on this machine or
    on Ray (``--engine``), one line per file and a summary printed, ``--report`` written."""
    from faceanon.folders.jobs import run
    from faceanon.folders.plan import Tally, plan
    from faceanon.settings import Engine

    batch = args.batch_size or 1
    engine = Engine(args.engine, batch, args.workers, args.address, args.gpus_per_worker)
    entries, notes = plan(args.inputs, args.output, tag)
    for note in notes:
        say(note)
    if args.report is not None and args.report.exists() and not args.overwrite:
        raise FaceanonError(f"{args.report}: already exists (--overwrite replaces it)")
    started = time.monotonic()
    tally = Tally(tag)
    progress = Progress()

    def label(number: int, total: int, entry: tuple[Path, Path]) -> None:
        progress.label = f"[{number}/{total}] {entry[0].name}"
        progress.show()

    policy = _policy(args)
    for row in run(make_job, entries, policy, engine, say, label, progress):
        progress.end()
        for line in row.lines:
            say(line)
        tally.add(row)
    say(tally.summary(len(entries), time.monotonic() - started, args.skip_existing))
    if args.report is not None:
        from faceanon.media.io import write_atomic

        try:
            write_atomic(args.report, tally.report(entries) + "\n", overwrite=args.overwrite)
        except FaceanonError as exc:
            say(f"error: {exc}")
            return EXIT_SOME_FAILED
        say(f"report: {args.report}")
    return EXIT_SOME_FAILED if tally.counts["failed"] else EXIT_OK


def rate(fps: float) -> str:
    """Frames per second, or seconds per frame below one frame a second (``0.0 fps`` says
    nothing)."""
    if fps >= 1 or fps <= 0:
        return f"{fps:.1f} fps"
    return f"{1 / fps:.1f} s per frame"


class _VideoProgress:
    """``video.mp4: frame 120/250, 118 faces, 4.1 fps, ETA 31 s`` on a terminal."""

    def __init__(self, progress: Progress, name: str) -> None:
        self.progress, self.name, self.started = progress, name, time.monotonic()

    def __call__(self, frames: int, total: int | None, faces: int) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        fps = frames / elapsed
        eta = f", ETA {(total - frames) / fps:.0f} s" if total and fps > 0 else ""
        of = f"/{total}" if total else ""
        self.progress.label = f"{self.name}: frame {frames}{of}, {faces} faces, {rate(fps)}{eta}"
        self.progress.show()


def _process_videos(
    args: argparse.Namespace, tag: str, pairs: list[tuple[Path, Path]], run: Callable[..., Any]
) -> int:
    """One line per video and a summary; ``run(src, dst, progress)`` does the work."""
    progress = Progress()
    counts = {"written": 0, "failed": 0, "frames": 0}
    started = time.monotonic()
    for src, dst in pairs:
        if dst.exists() and not args.overwrite:
            if args.skip_existing:
                continue
            say(
                f"error: {src}: {dst} already exists (--overwrite replaces it,"
                " --skip-existing keeps it)"
            )
            counts["failed"] += 1
            continue
        try:
            summary = run(src, dst, _VideoProgress(progress, src.name))
        except FaceanonError as exc:
            progress.end()
            say(f"error: {exc}")
            counts["failed"] += 1
            continue
        progress.end()
        for note in summary.notes:
            say(note)
        if not summary.written:
            say(
                f"{src}: no face found in {summary.frames} frames; nothing written"
                " (--write-faceless writes it)"
            )
            continue
        if summary.broke:
            say(f"warning: {src}: {summary.broke}; the frames before it were written")
        filled = f", {summary.filled} filled between detections" if summary.filled else ""
        if summary.recovered:
            filled += f", {summary.recovered} found by the turned search"
        if summary.held:
            filled += f", {summary.held} held at track ends"
        tracks = f" in {summary.tracks} tracks" if tag == "anonymized" else ""
        say(
            f"{src} -> {dst} ({summary.frames} frames, {summary.faces} face-frames{tracks}"
            f"{filled}, {rate(summary.frames / max(summary.seconds, 1e-6))})"
        )
        counts["written"] += 1
        counts["frames"] += summary.frames
    say(
        f"{tag} videos: files {len(pairs)}, written {counts['written']}, failed"
        f" {counts['failed']}, frames {counts['frames']}, {time.monotonic() - started:.1f} s"
    )
    return EXIT_SOME_FAILED if counts["failed"] else EXIT_OK


def _photos_and_videos(
    args: argparse.Namespace,
    tag: str,
    make_job: Callable[[Any], Any],
    video_runner: Callable[[], Callable[..., Any]],
) -> int:
    """The videos among the inputs (``video_runner()`` makes their ``run(src, dst, progress)``,
    only if there are any), then the photos."""
    from faceanon.folders.plan import plan_videos

    videos, rest = plan_videos(args.inputs, args.output, tag, getattr(args, "lossless", False))
    code = EXIT_OK
    if videos:
        code = _process_videos(args, tag, videos, video_runner())
        if not rest:
            return code
        args.inputs = rest
    return max(code, _process(args, tag, make_job))


def _video_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options both video commands pass on."""
    from faceanon.media.video import CHUNK

    return {
        "batch_size": args.batch_size or CHUNK,
        "audio": not args.no_audio,
        "overwrite": args.overwrite,
    }


def cmd_anonymize(args: argparse.Namespace) -> int:
    from functools import partial

    from faceanon.folders.jobs import AnonymizeJob

    settings = settings_from(args)
    if settings.keyed and args.key is None:
        raise FaceanonError(f"--method {args.method} needs a key: -k KEYFILE (faceanon keygen)")
    key = load_key(args.key) if settings.keyed else None

    def video_runner() -> Callable[..., Any]:
        from faceanon.loading import tools
        from faceanon.media import video

        made = tools(settings, key)
        if made.model:
            say(f"model: {made.model}")
        return lambda src, dst, progress: video.anonymize_video(
            src,
            dst,
            args.method,
            made.finder,
            anonymizer=made.anonymizer,
            key=key,
            write_faceless=args.write_faceless,
            lossless=args.lossless,
            crf=args.crf,
            progress=progress,
            **_video_options(args),
        )

    make_job = partial(
        AnonymizeJob,
        settings,
        _policy(args),
        key,
        batch_size=args.batch_size or 1,
        debug=args.debug,
    )
    return _photos_and_videos(args, "anonymized", make_job, video_runner)


def cmd_deanonymize(args: argparse.Namespace) -> int:
    from functools import partial

    from faceanon.folders.jobs import DeanonymizeJob

    settings, policy = settings_from(args), _policy(args)
    key = load_key(args.key)
    make_job = partial(
        DeanonymizeJob, settings, policy, key, batch_size=args.batch_size or 1, debug=args.debug
    )

    def video_runner() -> Callable[..., Any]:
        from faceanon.media import video

        job = make_job(None)

        def backbone_for(path: Path, meta: Any) -> Any:
            backbone = job.backbone_for(path, meta)
            for note in job.notes:  # the model line the first time, revision warnings
                say(note)
            job.notes.clear()
            return backbone

        return lambda src, dst, progress: video.deanonymize_video(
            src,
            dst,
            key,
            backbone_for,
            job.finder,
            crf=args.crf,
            progress=progress,
            **_video_options(args),
        )

    return _photos_and_videos(args, "deanonymized", make_job, video_runner)
