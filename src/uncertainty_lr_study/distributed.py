"""Launch one run as distributed data parallel from inside a process that is not a
``torchrun`` worker (a notebook kernel, a papermill job).

:func:`launch` starts ``num_processes`` fresh worker processes (``spawn``), gives each
the environment ``torchrun`` would (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``), and runs the training function in each; Hugging
Face ``Trainer`` (through ``accelerate``) then joins them into one process group
(NCCL on GPUs, one per worker; gloo on CPUs). :class:`~uncertainty_lr.UncertaintyLR`
averages its signals across the ranks before each decision, so every rank takes the
same decision.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import torch


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for ``MASTER_PORT``)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker(
    rank: int, fn: Callable[..., Any], args: tuple, kwargs: dict, world: int, port: int
) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    if torch.cuda.is_available():
        torch.cuda.set_device(rank % torch.cuda.device_count())
    fn(*args, **kwargs)


def launch(fn: Callable[..., Any], *args: Any, num_processes: int, **kwargs: Any) -> None:
    """Run ``fn(*args, **kwargs)`` in ``num_processes`` data-parallel worker processes
    on this machine and wait for all of them.

    ``fn`` must be importable (a module-level function) and its arguments picklable.

    Args:
        fn: the per-rank training function.
        num_processes: workers (one per GPU; on a CPU, processes sharing its cores).

    Raises:
        ValueError: ``num_processes < 2`` or more processes than visible GPUs when
            CUDA is used.
        torch.multiprocessing.ProcessRaisedException: a worker failed (its traceback
            is in the message).
    """
    if num_processes < 2:
        raise ValueError(f"num_processes must be >= 2 to launch workers, got {num_processes}")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus and num_processes > gpus:
        raise ValueError(f"{num_processes} processes but {gpus} visible GPU(s): one each")
    torch.multiprocessing.start_processes(
        _worker,
        args=(fn, args, kwargs, num_processes, free_port()),
        nprocs=num_processes,
        join=True,
        start_method="spawn",
    )


def is_main_process() -> bool:
    """True outside distributed runs and on rank 0: the process that writes outputs."""
    return int(os.environ.get("RANK", "0")) == 0
