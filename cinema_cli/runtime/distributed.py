"""Processes and devices for a render across ranks: how many, how to start them, and
what each rank sets up. The launcher is torchrun (`torch.distributed.run`), never a
home-made one: `cinema render --gpus N` runs it on this machine, and a person runs it
for several nodes (`torchrun --nnodes ... -m cinema_cli render`).

On CUDA each rank takes the GPU `cuda:LOCAL_RANK` (set as the current device, so a
backend's `cuda` is that GPU) and the process group is NCCL for tensors and gloo for
CPU tensors; on the CPU it is gloo. The ranks talk through the c10d store torchrun
already runs (`store`): small messages, no tensors.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from datetime import timedelta

from cinema_cli.errors import BadInput

# A rank waits this long for its next job: a real shot can take many minutes on another
# rank while this one has nothing ready.
WAIT = timedelta(days=1)
INTERRUPTED = 130  # the exit code of a command stopped by Ctrl-C
# Where rank 0 leaves its exit code for the `cinema` that launched the ranks: torchrun's own
# is 1 for any failure, and bad input must still exit 2.
EXIT_CODE_FILE = "CINEMA_EXIT_CODE_FILE"
# Set by `render --gpus`: the ranks are builders of the scheduler (pipeline.distributed) even
# when they are one context-parallel group (`--gpus 2 --cp 2`).
SCHEDULED = "CINEMA_RENDER_SCHEDULED"


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int
    local_size: int

    @property
    def is_coordinator(self) -> bool:
        return self.rank == 0


def world_from_env() -> World | None:
    """This process's place when torchrun started it with more than one rank, else None."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1 or "RANK" not in os.environ:
        return None
    return World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")),
                 int(os.environ.get("LOCAL_WORLD_SIZE", str(size))))


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def processes_for(gpus: str, cuda: int, cores: int) -> tuple[int, str | None]:
    """How many ranks `--gpus` asks for on a machine with `cuda` GPUs and `cores` CPU
    cores, and a notice for the user. Without a GPU, `--gpus N` runs N CPU processes
    (previz backends, testing); `all` means every GPU, so it needs one."""
    spec = gpus.strip().lower()
    if spec == "all":
        if cuda == 0:
            raise BadInput("--gpus all: torch sees no CUDA GPU on this machine; use --gpus N to render "
                           f"with N CPU processes (this machine has {cores} CPU cores)")
        return cuda, None
    try:
        count = int(spec)
    except ValueError:
        raise BadInput(f"--gpus {gpus!r}: expected a number of GPUs (1, 2, ...) or 'all'") from None
    if count < 1:
        raise BadInput(f"--gpus {gpus}: at least one process renders; use --gpus 1 or leave the option out")
    if cuda:
        if count > cuda:
            raise BadInput(f"--gpus {count}: this machine has {cuda} CUDA GPU(s); use --gpus {cuda} or --gpus all")
        return count, None
    if count > cores:
        raise BadInput(f"--gpus {count}: no CUDA GPU here, so each rank is a CPU process, and this machine has "
                       f"{cores} CPU cores; more processes than cores only slow the render down")
    return count, f"no CUDA GPU: --gpus {count} renders with {count} CPU processes (gloo)"


def scheduled(world: World | None, degree: int) -> bool:
    """Whether the ranks torchrun started are builders of the scheduler, not one context-
    parallel render led by rank 0: `render --gpus`, or more ranks than one group."""
    return world is not None and (degree == 1 or world.size > degree or os.environ.get(SCHEDULED) == "1")


def report_exit(code: int) -> int:
    """The exit code for this process: on rank 0 under a `cinema` that launched the ranks,
    `code` is left for it and the process exits 0 (torchrun would print its own traceback
    for a failed rank)."""
    path = os.environ.get(EXIT_CODE_FILE)
    if path and int(os.environ.get("RANK", "0")) == 0:
        with open(path, "w") as out:
            out.write(str(code))
        return 0
    return code


def torchrun_args(processes: int, args: list[str]) -> list[str]:
    """torchrun's command line for `cinema <args>` on `processes` ranks of this machine."""
    return ["--standalone", f"--nproc-per-node={processes}", "-m", "cinema_cli", *args]


def rank_threads(processes: int) -> int:
    """Each rank's share of the CPU cores, so N ranks do not each start a thread per core."""
    return max(1, cpu_cores() // processes)


def setup(world: World):
    """Join the process group, take this rank's GPU and share of the cores; the store
    the ranks message through (a client of torchrun's, under its own prefix)."""
    import atexit

    import torch
    import torch.distributed as dist

    torch.set_num_threads(rank_threads(world.local_size))
    if torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank)
        dist.init_process_group("cpu:gloo,cuda:nccl", device_id=torch.device("cuda", world.local_rank))
    else:
        dist.init_process_group("gloo")
    atexit.register(teardown)
    client = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                           timeout=WAIT, wait_for_workers=False)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"cinema-render/{attempt}/", client)


def teardown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def launch(processes: int, args: list[str]) -> int:
    """Run `cinema <args>` on `processes` ranks here with torchrun, in this process (its
    `run`, exactly what `torchrun` does, without starting and importing torch a second
    time), as builders of the scheduler; the exit code: rank 0's (2 for bad input), 1 when
    a rank failed, 130 when Ctrl-C stopped it. Ctrl-C reaches every rank from the
    terminal; torchrun stops them all."""
    import tempfile

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    with tempfile.TemporaryDirectory(prefix="cinema-ranks-") as folder:
        code_file = os.path.join(folder, "exit-code")
        os.environ.update({"OMP_NUM_THREADS": str(rank_threads(processes)), SCHEDULED: "1",
                           EXIT_CODE_FILE: code_file})
        try:
            run(parse_args(torchrun_args(processes, args)))
        except ChildFailedError:
            return 1  # each rank has reported its own failure
        except SignalException as err:
            return INTERRUPTED if err.sigval == signal.SIGINT else 1
        if not os.path.isfile(code_file):
            return 0
        with open(code_file) as left:
            return int(left.read())


def join(world: World, cp=None, device_setting: str = "auto"):
    """This rank's `RankGroup` (pipeline.distributed), once it has joined the others, and,
    with context parallelism (`cp`, runtime.cp settings of degree > 1), once every rank has
    made the groups of C (runtime.parallel's mesh)."""
    from cinema_cli.pipeline.distributed import RankGroup, stop_on_sigterm

    if world.is_coordinator:
        stop_on_sigterm()  # torchrun stopping the run: rank 0 still releases the lock
    else:
        # Ctrl-C is rank 0's to handle (it reports and stops everyone); a worker is ended by torchrun.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    store = setup(world)
    if cp is not None and cp.degree > 1:
        from cinema_cli.runtime import parallel

        parallel.build_mesh(cp, parallel.mesh_device(device_setting))
    return RankGroup(world, store)
