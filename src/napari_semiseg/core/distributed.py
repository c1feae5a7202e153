"""One model trained by several processes (torchrun): ranks, the DDP wrapper, and what they agree on.

torchrun (or SLURM's srun running torchrun) starts one process per GPU on every node and sets
RANK, WORLD_SIZE and LOCAL_RANK; ``start`` joins the group (NCCL on GPUs, gloo on CPUs). Every
rank samples its own shard with its own seed; DistributedDataParallel all-reduces the gradients,
so the student is identical everywhere after each step; ``average_buffers`` makes the batch-norm
statistics (and every other running statistic a method keeps as a buffer) identical too, so the
EMA teacher, an average of identical students, stays identical on every rank. Only rank 0
writes, logs and reports. Outside torchrun everything here is a no-op for one rank.
"""

from __future__ import annotations

import atexit
import inspect
import os
import warnings
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from .errors import InputError

# a dead peer is usually seen at once (its sockets close); this bounds the wait when it is not
COLLECTIVE_TIMEOUT = timedelta(minutes=10)


class PeerLost(RuntimeError):
    """Another training process of the same run stopped (killed, crashed or out of memory)."""


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start(device_name: str = "auto") -> Ranks:
    """Join the process group torchrun set up (once per process); one rank when not under torchrun."""
    if not launched_by_torchrun():
        return Ranks()
    from .trainer import choose_device

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if device_name == "mps":
            raise InputError("Training on several processes needs CUDA GPUs (NCCL) or CPUs (gloo), not MPS.")
        gpu = choose_device(device_name).type == "cuda"  # (refuses cuda where there is none)
        if gpu:
            if local >= torch.cuda.device_count():
                raise InputError(f"This node has {torch.cuda.device_count()} GPU(s) but torchrun started "
                                 f"{os.environ.get('LOCAL_WORLD_SIZE', '?')} processes on it: use "
                                 "--nproc_per_node at most the number of GPUs.")
            torch.cuda.set_device(local)
        atexit.register(finish)
        try:
            dist.init_process_group("nccl" if gpu else "gloo", timeout=COLLECTIVE_TIMEOUT)
        except (RuntimeError, ValueError) as err:
            raise InputError(f"Could not join the other training processes ({str(err).splitlines()[0]}): check "
                             "--rdzv_endpoint and that every node can reach it.") from None
    return current()


def current() -> Ranks:
    if not dist.is_initialized():
        return Ranks()
    return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def from_main(make):
    """``make()`` on rank 0, its result on every rank (an InputError there is raised everywhere)."""
    if not dist.is_initialized():
        return make()
    box = [None]
    if dist.get_rank() == 0:
        try:
            box[0] = ("ok", make())
        except InputError as err:
            box[0] = ("error", str(err))
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise InputError(value)
    return value


def gather_dicts(mine: dict) -> dict:
    """Every rank's dict merged (each rank scored its share of the test cases); rank 0's is complete."""
    if not dist.is_initialized():
        return mine
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, mine)
    return {k: v for part in parts for k, v in part.items()}


def device_of(ranks: Ranks, device: torch.device) -> torch.device:
    """Each process its own GPU on its node."""
    if ranks.distributed and device.type == "cuda":
        return torch.device("cuda", ranks.local_rank)
    return device


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def agree(progress: float | None, stop: bool) -> tuple[float | None, bool]:
    """Rank 0's progress (its clock sets the budget and the learning rate for all) and whether any
    rank was asked to stop: every rank then takes the same number of steps with the same schedule."""
    if not dist.is_initialized():
        return progress, stop
    main = dist.get_rank() == 0
    t = torch.tensor([(progress if progress is not None else -1.0) if main else 0.0, float(stop)],
                     dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    p = float(t[0])
    return (None if p < 0 else p), bool(t[1] > 0)


def average_(tensors: list[torch.Tensor]) -> None:
    """Average floating tensors across ranks in place, in one collective."""
    tensors = [t for t in tensors if t.is_floating_point()]
    if not dist.is_initialized() or not tensors:
        return
    flat = torch.cat([t.detach().reshape(-1).to(_collective_device(), torch.float64) for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view_as(t))
        offset += n


def sum_(tensor: torch.Tensor) -> torch.Tensor:
    """The sum over ranks of a tensor (a new tensor; the input when there is one rank)."""
    if not dist.is_initialized():
        return tensor
    out = tensor.detach().to(_collective_device(), copy=True)
    dist.all_reduce(out)
    return out.to(tensor.device)


@torch.no_grad()
def average_buffers(module: torch.nn.Module) -> None:
    """Batch-norm running statistics and the methods' other running buffers, the same on every rank."""
    average_([b for b in module.buffers()])


def wrap(method: torch.nn.Module, device: torch.device, sync_batchnorm: bool = False) -> torch.nn.Module:
    """The method behind DistributedDataParallel: calling it runs one training step through
    ``forward`` (so DDP's hooks all-reduce the gradients of every trainable parameter)."""
    from torch.nn.parallel import DistributedDataParallel

    if sync_batchnorm:
        method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
    # TSA reads the 1x1 head's weight as a matrix: its gradient's layout differs from the channels-last
    # bucket's for that one small tensor; DDP copies it (correct, a few hundred bytes), the warning is noise
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    # buffers are averaged after each step instead of broadcast from rank 0 before each forward
    # (the initial broadcast of parameters and buffers still makes every rank start from rank 0's)
    no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(
        DistributedDataParallel).parameters else {"broadcast_buffers": False}
    return DistributedDataParallel(method, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=bool(getattr(method, "skips_parameters", False)),
                                   gradient_as_bucket_view=True, **no_sync)


_PEER_SIGNS = ("connection closed", "connection reset", "broken pipe", "gloo", "nccl", "timed out", "timeout",
               "socket")


def is_peer_failure(err: BaseException) -> bool:
    """Whether an error raised in a collective means another rank is gone (not a bug of this one)."""
    return isinstance(err, dist.DistError) or any(k in str(err).lower() for k in _PEER_SIGNS)


def check_sync_batchnorm(requested: bool, device: torch.device) -> None:
    if requested and device.type != "cuda" and launched_by_torchrun():
        raise InputError("sync_batchnorm needs GPUs (NCCL): on CPU processes train with plain batch norm "
                         "(--set sync_batchnorm=false).")


def finish() -> None:
    if dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - a group a dead peer broke cannot be torn down cleanly; the process is ending
            pass
