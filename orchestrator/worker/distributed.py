"""Joining the ranks' process group: `deepspeed.init_distributed` with DeepSpeed's JIT-compiled comm op loaded first,
under a lock that dies with its holder.

DeepSpeed's CPU backend loads its shared-memory comm op on every start through torch's extension loader, which guards
the build folder with a plain lock *file* (torch.utils.file_baton). A rank killed while it holds that file (a job
stopped, preempted or timed out in its first seconds) leaves it behind, and every later rank on the machine waits for it
forever. Here every cpr rank loads the op while holding an `fcntl` lock beside the build folder, which the kernel
releases when its holder dies; whoever holds it and still finds torch's lock file knows that file is stale.
"""

from __future__ import annotations

import fcntl
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def _shm_builder():  # type: ignore[no-untyped-def]
    """DeepSpeed's shared-memory comm op builder when this accelerator builds it (as deepspeed.comm.torch decides)."""
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is None or not deepspeed.ops.__compatible_ops__.get(builder.NAME, False):
        return None
    return builder


def _build_dir(name: str) -> Path | None:
    """torch's build folder for the extension `name` (None if this torch names it another way)."""
    from torch.utils import cpp_extension

    where = getattr(cpp_extension, "_get_build_directory", None)  # private, but the only source of the folder's name
    return Path(where(name, False)) if where is not None else None


def load_comm_op() -> None:
    """Load (building once per machine) DeepSpeed's comm op, clearing a lock file a dead rank left."""
    from deepspeed.git_version_info import installed_ops

    builder = _shm_builder()
    if builder is None or installed_ops.get(builder.name, False):  # not built here, or built at install: no JIT
        return
    folder = _build_dir(builder.name)
    if folder is None:
        builder.load(verbose=False)
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{builder.name}.cpr.lock", "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # released by the kernel if this process dies
        try:
            baton = folder / "lock"
            if baton.exists():  # every cpr loader holds the guard while it holds the baton: its holder is gone
                log.warning("removing %s, left by a process killed while loading %s", baton, builder.name)
                baton.unlink(missing_ok=True)
            builder.load(verbose=False)  # cached by DeepSpeed: init_distributed's own load returns it at once
        finally:
            fcntl.flock(guard, fcntl.LOCK_UN)


def init_distributed(backend: str) -> None:
    """Join the job's process group (RANK, WORLD_SIZE, MASTER_ADDR/PORT already set in the environment)."""
    import deepspeed

    load_comm_op()
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)
