"""How many Ray actors a run starts and what each reserves, from the cluster's
resources and the command line's --num-workers / --gpus-per-worker / --cpus-per-worker."""

from __future__ import annotations

from dataclasses import dataclass

#: images per worker call when no batch size is given: on a GPU two forwards' worth, so
#: images of one padded size find each other; on CPUs (seconds per image) one, so that
#: the work spreads evenly over the workers
DEFAULT_ROWS_PER_CALL = {"gpu": 8, "cpu": 1}
MAX_BLOCKS = 20_000  # input blocks: enough to spread decoding, few enough to schedule


@dataclass(frozen=True)
class Resources:
    """How many actors, what each reserves, and how many calls each runs at once (two on
    a GPU: one batch in the model while the other's outputs are written)."""

    workers: int
    gpus_per_worker: float
    cpus_per_worker: float
    calls_per_worker: int = 1


def check_resources(
    num_workers: int | None, gpus_per_worker: float | None, cpus_per_worker: float | None
) -> None:
    """What is wrong with the pool's settings whatever the cluster (ValueError), said
    before any work: a rerun with nothing left to do refuses them as the first run did."""
    if num_workers is not None and num_workers < 1:
        raise ValueError("--num-workers must be at least 1")
    if gpus_per_worker is not None and gpus_per_worker < 0:
        raise ValueError("--gpus-per-worker must be 0 (CPU) or more")
    if cpus_per_worker is not None and not cpus_per_worker > 0:
        raise ValueError("--cpus-per-worker must be above 0")


def plan_resources(
    cluster: dict[str, float],
    node_cpus: float,
    *,
    num_workers: int | None,
    gpus_per_worker: float | None,
    cpus_per_worker: float | None,
) -> Resources:
    """Defaults: with GPUs in the cluster one worker per GPU, each reserving one GPU and
    one CPU; without, one worker per ``cpus_per_worker`` (default: a whole node's CPUs)."""
    check_resources(num_workers, gpus_per_worker, cpus_per_worker)
    gpus = float(cluster.get("GPU", 0.0))
    cpus = float(cluster.get("CPU", 0.0))
    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if gpus >= 1 else 0.0
    if gpus_per_worker > 0 and gpus < gpus_per_worker:
        raise ValueError(
            f"{gpus_per_worker:g} GPU(s) per worker (--gpus-per-worker, or --device cuda) but "
            f"the Ray cluster has {gpus:g} GPUs; use --device cpu to run on CPUs"
        )
    if gpus_per_worker > 0:
        workers = num_workers or max(1, int(gpus // gpus_per_worker))
        return Resources(workers, gpus_per_worker, cpus_per_worker or 1.0, calls_per_worker=2)
    if cpus_per_worker is None:
        share = cpus // num_workers if num_workers else node_cpus
        cpus_per_worker = float(max(1, min(share, node_cpus)))
    if cpus_per_worker > node_cpus:
        raise ValueError(
            f"{cpus_per_worker:g} CPUs per worker, but the largest node has {node_cpus:g}"
        )
    workers = num_workers or max(1, int(cpus // cpus_per_worker))
    return Resources(workers, 0.0, cpus_per_worker)
