"""Where a run executes: the device, torchrun's process group, the autocast context, and a stop signal all
ranks agree on. train.py and eval.py set themselves up through it; nothing here knows about models or data."""

import contextlib
import datetime
import os
import signal
from dataclasses import dataclass

import torch
import torch.distributed as dist

from inheritune.util import UserError


def resolve_device(name: str) -> torch.device:
    """auto | cpu | cuda | cuda:N -> a device this torch can run on, or one line saying why not."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise UserError(f"device={name!r}: use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        why = "is a CPU-only build" if torch.version.cuda is None else "sees no GPU"
        raise UserError(
            f"device={name}: this torch {torch.__version__} {why}; use device=cpu (or install a CUDA "
            f"build of torch on a GPU machine)"
        )
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(
            f"device={name}: only {torch.cuda.device_count()} GPU(s) visible; use cuda:0 .. "
            f"cuda:{torch.cuda.device_count() - 1}"
        )
    return device


@dataclass
class Runtime:
    rank: int
    world: int
    device: torch.device
    autocast: contextlib.AbstractContextManager
    host_group: object = None  # gloo group for host-side votes (the stop flag) that must not wait on the GPU

    @property
    def master(self) -> bool:
        return self.rank == 0


def setup_runtime(device: str = "auto", dtype: str = "auto", attention: str = "auto") -> Runtime:
    """torchrun's env vars -> process group (nccl on CUDA, gloo on CPU), device and autocast context (dtype
    auto: bfloat16 on CUDA, float32 on CPU); attention != auto allows only that SDPA kernel on CUDA."""
    rank, world, local_rank = (
        int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0))
    )
    device = resolve_device(device)
    if device.type == "cuda":  # under torchrun each process takes the GPU of its local rank
        device = torch.device("cuda", local_rank if world > 1 else device.index or 0)
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        for name in ("flash", "mem_efficient", "cudnn", "math"):  # SDPA kernels; the CPU has its own
            getattr(torch.backends.cuda, f"enable_{name}_sdp")(
                attention == "auto" or name == attention.replace("efficient", "mem_efficient")
            )
    host_group = None
    if (
        int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", 0))
        and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    ):
        # restarted workers would read the failed attempt's NCCL/gloo addresses from the shared store and hang
        raise UserError(
            "torchrun --max_restarts shares its rendezvous store with the workers, and restarted workers "
            "then hang on the failed attempt's addresses (pytorch/pytorch#135712); launch it as "
            "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 torchrun --standalone ... (one node) or with "
            "--rdzv-backend=c10d (several nodes; the static --master_addr launch always shares the store)"
        )
    if world > 1:
        if not dist.is_initialized():  # 30 min: rank 0 may spend minutes writing a multi-GB checkpoint
            dist.init_process_group(
                "nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(minutes=30)
            )
        host_group = dist.new_group(backend="gloo") if device.type == "cuda" else dist.group.WORLD
    dtype = {"auto": "bfloat16" if device.type == "cuda" else "float32"}.get(dtype, dtype)
    autocast = (
        contextlib.nullcontext() if dtype == "float32" else torch.autocast(device.type, getattr(torch, dtype))
    )
    return Runtime(rank, world, device, autocast, host_group)


def all_sum(rt: Runtime, *values: float) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=rt.device)
    if rt.world > 1:
        dist.all_reduce(t)
    return t.tolist()


def any_rank(rt: Runtime, flag: bool) -> bool:
    """True if any rank's flag is set; on the host (gloo), so the GPU queue keeps running ahead."""
    if rt.world == 1:
        return flag
    t = torch.tensor([float(flag)])
    dist.all_reduce(t, group=rt.host_group)
    return t.item() > 0


class StopRequested:
    """SIGTERM or Ctrl-C (SIGINT) -> finish the current step, checkpoint, exit (agreed over ranks, so no rank
    waits forever). A second Ctrl-C interrupts at once. A context manager: the process's previous handlers
    are back once the run ends, so a run started from Python (demo.py, a test, a notebook) leaves no handler
    behind for the processes it forks later."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.flag, self.signal = False, None

    def __enter__(self):
        self.previous = {s: signal.signal(s, self.request) for s in self.SIGNALS}
        return self

    def request(self, signum, frame):
        self.flag, self.signal = True, signal.Signals(signum)
        if signum == signal.SIGINT:  # the next Ctrl-C is Python's own: KeyboardInterrupt
            signal.signal(signal.SIGINT, self.previous[signal.SIGINT])

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
