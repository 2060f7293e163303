"""Running a batch on a Dask cluster (``cellmaps predict --workers N`` / ``--scheduler``).

cellmaps does not schedule work itself: images (or row bands of one slide) become Dask
tasks on a ``dask.distributed`` cluster — a :class:`~distributed.LocalCluster` of ``N``
worker processes on this machine, or a running cluster (``dask scheduler`` on one machine,
``dask worker tcp://HOST:8786`` on others). The model is sent to every worker once
(``scatter(broadcast=True)``); each task writes its outputs atomically, so a task that Dask
retries after a worker dies never leaves a file twice or half-written.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from tqdm import tqdm

from cellmaps.errors import CellmapsInputError


def _require_distributed():
    try:
        # imported here: distributed is optional (cellmaps[cluster])
        import distributed
    except ImportError as exc:
        raise CellmapsInputError(
            "--workers / --scheduler need Dask: pip install 'cellmaps[cluster]' (dask[distributed])"
        ) from exc
    return distributed


def _set_torch_threads(n: int) -> int:

    torch.set_num_threads(n)
    return torch.get_num_threads()


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Threads for each of ``workers`` local workers so that together they use the
    machine's cores once (never fewer than 1): a fair comparison with one serial process
    that uses every core."""
    cores = cores or os.cpu_count() or 1
    return max(1, cores // max(1, workers))


@contextlib.contextmanager
def cluster_client(workers: int | None = None, scheduler: str | None = None) -> Iterator:
    """A Dask client: on a new local cluster of ``workers`` processes (each with
    :func:`threads_per_worker` threads, torch set to the same), or on the running cluster at
    ``scheduler`` (``tcp://HOST:PORT``). Yields None when neither is given (serial)."""
    if not workers and not scheduler:
        yield None
        return
    distributed = _require_distributed()
    if scheduler:
        try:
            client = distributed.Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise CellmapsInputError(
                f"cannot reach the Dask scheduler at {scheduler} ({exc}); start one with "
                "`dask scheduler` and workers with `dask worker ADDRESS`"
            ) from exc
        with client:
            yield client
        return
    threads = threads_per_worker(workers)
    # imported here: dask is optional (cellmaps[cluster])
    import dask

    # Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536. Setting it at all turns off
    # glibc's dynamic mmap threshold, so every large numpy temporary of tiled inference is
    # mapped and unmapped again (page faults): a band of a slide ran 1.6x slower in a worker
    # than in a plain process with the same threads. Workers here start without it.
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    environ.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    with (
        dask.config.set(
            {
                "distributed.nanny.pre-spawn-environ": environ,
                # the statistical profiler samples every task thread's stack every 10 ms,
                # taking the GIL from the numpy loops of tiling and decoding
                "distributed.worker.profile.enabled": False,
            }
        ),
        distributed.LocalCluster(
            n_workers=int(workers),
            threads_per_worker=1,  # one task at a time per worker; torch uses `threads`
            processes=True,
            dashboard_address=None,
            silence_logs=40,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.run(_set_torch_threads, threads)
        yield client


def gather_with_progress(futures: list, desc: str, progress: bool) -> list:
    """Results of ``futures`` in their own order, with a progress bar as they finish."""
    # imported here: distributed is optional (cellmaps[cluster])
    from distributed import as_completed

    bar = tqdm(total=len(futures), desc=desc, unit=desc.rstrip("s"), disable=not progress)
    for _ in as_completed(futures):
        bar.update(1)
    bar.close()
    return [f.result() for f in futures]
