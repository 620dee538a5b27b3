"""``--engine ray``: the CLI's jobs (:mod:`faceanon.folders.jobs`) on Ray Data workers.

The inputs become a dataset of (input, output) paths; ``map_batches`` runs them through a
stateful worker class, ``--workers`` of them, each of which builds the job once (loads the
model, the detector and the key) and then transforms ``--batch-size`` photos per call and
writes each output itself, atomically, exactly as the local engine does. The driver only
prints the rows that come back. Paths must mean the same on every node (a shared or mounted
folder): the workers work in the driver's current folder.

The key travels to the workers inside the job (pickled through Ray's object store, inside
the cluster); it is never written to disk by faceanon.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faceanon.errors import FaceanonError, first_line
from faceanon.folders.plan import Entry, Row
from faceanon.settings import Engine

if TYPE_CHECKING:
    from faceanon.folders.jobs import Job

INSTALL = "--engine ray needs Ray: pip install 'faceanon[ray]'"


class Worker:
    """One Ray actor: the job built once, then batches of paths -> rows (as JSON)."""

    def __init__(self, make_job: Callable[[Any], Job], folder: str) -> None:
        os.chdir(folder)
        self.job = make_job(None)
        model = getattr(self.job, "model", None)
        if model:
            self.job.notes.append(f"model (ray worker {os.getpid()}): {model}")

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        entries = [(Path(s), Path(d)) for s, d in zip(batch["src"], batch["dst"], strict=True)]
        return {"row": [json.dumps(asdict(row)) for row in self.job.run(entries)]}


def run_on_ray(
    make_job: Callable[[Any], Job],
    entries: Sequence[Entry],
    engine: Engine,
    say: Callable[[str], None],
) -> Iterator[Row]:
    """Every entry processed by ``engine.workers`` Ray workers; rows as they come back."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise FaceanonError(INSTALL) from None
    for name in ("ray", "ray.data"):  # Ray's own INFO and WARNING lines: the rows say enough
        logging.getLogger(name).setLevel(logging.ERROR)
    if not ray.is_initialized():
        try:
            ray.init(address=engine.address, logging_level=logging.WARNING, include_dashboard=False)
        except Exception as exc:  # ConnectionError, RuntimeError, ValueError across versions
            where = engine.address or "a local instance"
            raise FaceanonError(
                f"--engine ray: cannot start or join {where}: {first_line(exc)}"
            ) from None
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    say(
        f"ray: {len(entries)} inputs, {engine.workers} workers of 1 CPU"
        + (f" x {engine.gpus_per_worker:g} GPUs" if engine.gpus_per_worker else "")
        + f", batches of {engine.batch_size}"
    )
    dataset = ray.data.from_items([{"src": str(s), "dst": str(d)} for s, d in entries])
    rows = dataset.map_batches(
        Worker,
        fn_constructor_args=(make_job, os.getcwd()),
        batch_size=engine.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=engine.workers),
        num_gpus=engine.gpus_per_worker,
    )
    try:
        for item in rows.iter_rows():
            yield Row(**json.loads(str(item["row"])))
    except FaceanonError:
        raise
    except Exception as exc:  # a worker that cannot start: the model, the key, a bug
        cause: BaseException = exc
        while cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, FaceanonError):
            raise FaceanonError(str(cause)) from None
        raise FaceanonError(f"--engine ray: a worker failed: {first_line(cause)}") from None
