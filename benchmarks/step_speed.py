"""How close is each optimizer step to the memory-bandwidth limit?

An optimizer step reads and writes each parameter's tensors a fixed number of times and does little
arithmetic, so its physical limit is memory bandwidth. This script measures that limit with a STREAM-style
probe (an in-place ``a.add_(b)``: 12 bytes per element) in the same run, then times one step of every
optimlab optimizer, of torch's fused and foreach counterparts and, when installed, of the peer libraries'
implementations (pytorch_optimizer, torch-optimizer, timm), all on the *same* parameters and gradients.

Usage (from the repository root)::

    PYTHONPATH=src python3 benchmarks/step_speed.py                 # 25M parameters, 2 threads
    PYTHONPATH=src python3 benchmarks/step_speed.py --quick         # ~1M parameters, a smoke test
    PYTHONPATH=src python3 benchmarks/step_speed.py --only Adam,LAMB --steps 50
    PYTHONPATH=src python3 benchmarks/step_speed.py --malloc-tunables   # re-run under the glibc settings
    PYTHONPATH=src python3 benchmarks/step_speed.py --rounds 3 --no-peers   # a busy machine: best of 3
    OPTIMLAB_KERNELS=0 PYTHONPATH=src python3 benchmarks/step_speed.py      # the eager path (no compiler)

The model: 25.05M fp32 parameters in 150 tensors of mixed shapes, like a small transformer plus a convnet
head: 2 large matrices [8192, 1024], 4 x [1024, 1024], 8 x [512, 768], 16 x [128, 384], 20 conv kernels [32,
16, 3, 3], 50 vectors [1024] and 50 vectors [96]. ``--size`` scales the first dimension of the matrices
(kernels and vectors stay). Parameters and gradients come from a fixed seed.

Table 1: median ms per step (mean over a multiple of ``k`` steps for Lookahead), that time as a multiple of
the bandwidth bound of the algorithm's minimal traffic (column ``B/p``: bytes per parameter read and written
by a step that touches each tensor the fewest times the algorithm allows), and the ratios of optimlab's time
to torch's fused and foreach implementations and to the fastest peer. Table 2: bytes of optimizer state per
parameter (every state tensor but 0-d counters, over the number of parameters) and the time of the first
step of a freshly constructed optimizer. The probe runs once after every timed step (interleaved), and each
row's bound uses the median of the probes taken during its own timing, so the load from other tenants of a
shared machine affects a row's time and its bound alike.

optimlab's fast paths (see ``optimlab/core/kernels.py`` and ``optimlab/core/tiling.py``): torch's fused kernels
where the algorithm is torch's (SGD, Adam, AdamW, AMSGrad, Adagrad, RAdam's rectified steps); every other rule runs as
one compiled loop per phase, traced from the rule itself and compiled with the system's C compiler. The run
uses a fresh kernel cache unless ``--warm-cache``, so Table 2's first step includes compiling.
SWATS is timed in each phase with every implementation in the same phase (``SWATS(adam)``, ``SWATS(sgd)``).

Allocation matters on CPU (torch has no caching allocator there): foreach arithmetic allocates model-sized
temporaries that glibc returns to the OS and page-faults in again every step. The header says which malloc
setting the run used; ``--malloc-tunables`` re-executes the script with ``MALLOC_MMAP_THRESHOLD_=33554432
MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=268435456``. Benchmarks are not part of the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import importlib.util
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Entry", "build_registry", "main", "make_model"]

MALLOC_TUNABLES = {
    "MALLOC_MMAP_THRESHOLD_": "33554432",
    "MALLOC_TRIM_THRESHOLD_": "68719476736",
    "MALLOC_TOP_PAD_": "268435456",
}

BASE_SHAPES: list[tuple[int, ...]] = (
    [(8192, 1024)] * 2 + [(1024, 1024)] * 4 + [(512, 768)] * 8 + [(128, 384)] * 16
    + [(32, 16, 3, 3)] * 20 + [(1024,)] * 50 + [(96,)] * 50
)
BASE_SIZE = sum(math.prod(s) for s in BASE_SHAPES)  # 25,051,840

Factory = Callable[[list[torch.Tensor]], Any]


# ----------------------------------------------------------------------------------------------------------
# model, probe, timing
# ----------------------------------------------------------------------------------------------------------
def make_model(size: int, seed: int = 0) -> tuple[list[torch.nn.Parameter], list[torch.Tensor]]:
    """Parameters (with ``.grad`` set) of about ``size`` elements and a pristine copy of their values."""
    scale = size / BASE_SIZE
    shapes = [((max(1, round(s[0] * scale)),) + s[1:]) if len(s) == 2 else s for s in BASE_SHAPES]
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen) * 0.05) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * 1e-2
    return params, [p.detach().clone() for p in params]


_PROBE: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}


def _probe_tensors(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    if n not in _PROBE:
        _PROBE.clear()
        _PROBE[n] = (torch.randn(n), torch.randn(n))
    return _PROBE[n]


def probe_gbs(n: int, reps: int = 7) -> float:
    """STREAM-style bandwidth: in-place ``a.add_(b)`` over ``n`` fp32 elements (12 B each), best of reps."""
    a, b = _probe_tensors(n)
    a.add_(b)
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        a.add_(b)
        best = min(best, time.perf_counter() - t)
    return 12 * n / best / 1e9


def state_tensors(obj: Any, seen: set[int] | None = None) -> list[torch.Tensor]:
    """Every tensor reachable from a state_dict-like structure, each storage once."""
    seen = set() if seen is None else seen
    out: list[torch.Tensor] = []
    if isinstance(obj, torch.Tensor):
        key = obj.untyped_storage().data_ptr() if obj.numel() else id(obj)
        if key not in seen:
            seen.add(key)
            out.append(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            out.extend(state_tensors(v, seen))
    elif isinstance(obj, list | tuple):
        for v in obj:
            out.extend(state_tensors(v, seen))
    return out


def state_bytes_per_param(opt: Any, params: list[torch.nn.Parameter], n: int) -> float:
    sd = opt.state_dict()
    seen = {p.untyped_storage().data_ptr() for p in params}  # a state_dict never holds the parameters
    tensors = state_tensors({k: v for k, v in sd.items() if k != "param_groups"}, seen)
    return sum(t.numel() * t.element_size() for t in tensors if t.dim() > 0) / n


@dataclass
class Result:
    label: str
    ms: float
    first_s: float
    state_bpp: float
    gbs: float


def swats_phase(opt: Any) -> str:
    """The phase of a SWATS implementation (optimlab's property, or the peers' ``param_groups[0]["phase"]``)."""
    if isinstance(opt, PinPhase):
        return opt.phase.lower()  # set before every step (the step itself may switch the group afterwards)
    phase = getattr(opt, "phase", None)
    return str(phase if isinstance(phase, str) else opt.param_groups[0].get("phase", "?")).lower()


class PinPhase:
    """A peer SWATS held in one phase: its group's ``phase`` is set before every step (a dict write)."""

    def __init__(self, inner: Any, phase: str) -> None:
        self.inner, self.phase = inner, phase

    def step(self) -> None:
        for group in self.inner.param_groups:
            group["phase"] = self.phase
        self.inner.step()

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()


def measure(label: str, factory: Factory, params: list[torch.nn.Parameter], init: list[torch.Tensor], n: int,
            steps: int, warmup: int, k: int, phase: str | None = None,
            grads: list[torch.Tensor] | None = None) -> Result:
    with torch.no_grad():
        for p, v in zip(params, init, strict=True):
            p.copy_(v)
        for p, g in zip(params, grads or [], strict=False):  # a peer may write into p.grad (schedulefree's AdamW)
            p.grad.copy_(g)
    gc.collect()
    opt = factory(params)
    t = time.perf_counter()
    opt.step()
    first = time.perf_counter() - t
    for _ in range(max(0, warmup - 1)):
        opt.step()
    if phase is not None:
        for _ in range(20):  # let it switch (SWATS's SGD phase), at most 20 more untimed steps
            if swats_phase(opt) == phase:
                break
            opt.step()
        if swats_phase(opt) != phase:
            raise RuntimeError(f"still in phase {swats_phase(opt)!r}, not {phase!r}: not comparable")
    # The probe is interleaved with the timed steps, so the bound is measured under the same load from the
    # machine's other tenants as the steps themselves (a shared machine's bandwidth drifts by 2x over minutes).
    a, b = _probe_tensors(n)
    times, probes = [], []
    for _ in range(steps if k == 1 else k * max(1, round(steps / k))):
        t = time.perf_counter()
        opt.step()
        t1 = time.perf_counter()
        a.add_(b)
        probes.append(time.perf_counter() - t1)
        times.append(t1 - t)
    ms = (statistics.median(times) if k == 1 else statistics.fmean(times)) * 1e3
    gbs = 12 * n / statistics.median(probes) / 1e9
    bpp = state_bytes_per_param(opt, params, n)
    del opt
    gc.collect()
    return Result(label, ms, first, bpp, gbs)


# ----------------------------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Entry:
    """One algorithm: optimlab's constructor and its counterparts, all taking the parameter list."""

    name: str
    min_bytes: float  # fp32 bytes per parameter of the minimal traffic of one step
    optimlab: Factory | None
    fused: Factory | None = None
    foreach: Factory | None = None
    peers: dict[str, Factory] = field(default_factory=dict)
    k: int = 1  # steps to average over (Lookahead's period)
    note: str = ""
    phase: str | None = None  # SWATS: the phase every implementation must be in when timed ("adam" or "sgd")


def _optional(module: str) -> types.ModuleType | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(module)
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None


def _timm_optim() -> dict[str, types.ModuleType] | str:
    """timm's optimizer modules. ``import timm`` needs torchvision; the optim modules themselves need only
    torch, so without torchvision they are loaded under a stub package that skips ``timm/__init__.py``."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        return "not installed"
    mods: dict[str, types.ModuleType] = {}
    try:
        importlib.import_module("timm.optim")
    except Exception:  # noqa: BLE001
        root = list(spec.submodule_search_locations)[0]
        for name, path in (("timm", root), ("timm.optim", os.path.join(root, "optim"))):
            stub = types.ModuleType(name)
            stub.__path__ = [path]
            sys.modules[name] = stub
    try:
        for name in ("lamb", "lars", "lookahead", "adamw", "lion"):
            mods[name] = importlib.import_module(f"timm.optim.{name}")
    except Exception as exc:  # noqa: BLE001
        return f"import failed: {exc}"
    return mods


def build_registry() -> tuple[list[Entry], list[str]]:
    notes: list[str] = []
    optimlab = _optional("optimlab")
    if optimlab is None:
        notes.append("optimlab not importable (run with PYTHONPATH=src); timing the counterparts only")

    def _ol(name: str, **kw: Any) -> Factory | None:
        cls = getattr(optimlab, name, None)
        if cls is None:
            if optimlab is not None:
                notes.append(f"optimlab.{name} missing: skipped")
            return None
        return lambda ps: cls(ps, **kw)

    po = _optional("pytorch_optimizer")
    to = _optional("torch_optimizer")
    tm = _timm_optim()
    def version(mod: Any) -> str:
        return getattr(mod, "__version__", "installed") if mod is not None else "not installed"

    notes.append(f"peers: pytorch_optimizer {version(po)}; torch-optimizer {version(to)}; timm.optim "
                 + (", ".join(tm) if isinstance(tm, dict) else tm))
    timm = tm if isinstance(tm, dict) else {}
    optim = torch.optim
    wd = 1e-2
    adam = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8)

    def peers(**cands: Any) -> dict[str, Factory]:
        return {k: v for k, v in cands.items() if v is not None}

    def pf(mod: Any, name: str, **kw: Any) -> Factory | None:
        cls = getattr(mod, name, None) if mod is not None else None
        return None if cls is None else (lambda ps: cls(ps, **kw))

    def pin(factory: Factory | None, phase: str) -> Factory | None:
        return None if factory is None else (lambda ps: PinPhase(factory(ps), phase))

    def lookahead_ol(ps: list[torch.Tensor]) -> Any:
        from optimlab.wrappers import Lookahead  # noqa: PLC0415

        return Lookahead(optimlab_adam(ps), k=5, alpha=0.5)

    def optimlab_adam(ps: list[torch.Tensor]) -> Any:
        return optimlab.Adam(ps, **adam)

    def has_lookahead() -> bool:
        if optimlab is None:
            return False
        try:
            from optimlab.wrappers import Lookahead  # noqa: F401, PLC0415
        except Exception:  # noqa: BLE001
            notes.append("optimlab.wrappers.Lookahead missing: skipped")
            return False
        return True

    def la_peer(mod: Any, name: str) -> Factory | None:
        cls = getattr(mod, name, None) if mod is not None else None
        return None if cls is None else (lambda ps: cls(optim.Adam(ps, **adam), k=5, alpha=0.5))

    entries = [
        Entry("SGD", 20, _ol("SGD", lr=1e-2, momentum=0.9),
              fused=lambda ps: optim.SGD(ps, lr=1e-2, momentum=0.9, fused=True),
              foreach=lambda ps: optim.SGD(ps, lr=1e-2, momentum=0.9, foreach=True)),
        Entry("SGDW", 20, _ol("SGDW", lr=1e-2, momentum=0.9, weight_decay=wd),
              peers=peers(pytorch_optimizer=pf(po, "SGDW", lr=1e-2, momentum=0.9, weight_decay=wd)),
              note="torch has no decoupled-decay SGD"),
        Entry("Adagrad", 20, _ol("Adagrad", lr=1e-2),
              fused=lambda ps: optim.Adagrad(ps, lr=1e-2, fused=True),
              foreach=lambda ps: optim.Adagrad(ps, lr=1e-2, foreach=True)),
        Entry("RMSprop", 20, _ol("RMSprop", lr=1e-3),
              foreach=lambda ps: optim.RMSprop(ps, lr=1e-3, foreach=True)),
        Entry("Adam", 28, _ol("Adam", **adam),
              fused=lambda ps: optim.Adam(ps, **adam, fused=True),
              foreach=lambda ps: optim.Adam(ps, **adam, foreach=True)),
        Entry("AdamW", 28, _ol("AdamW", **adam, weight_decay=wd),
              fused=lambda ps: optim.AdamW(ps, **adam, weight_decay=wd, fused=True),
              foreach=lambda ps: optim.AdamW(ps, **adam, weight_decay=wd, foreach=True)),
        Entry("Adam(amsgrad)", 36, _ol("Adam", **adam, amsgrad=True),
              fused=lambda ps: optim.Adam(ps, **adam, amsgrad=True, fused=True),
              foreach=lambda ps: optim.Adam(ps, **adam, amsgrad=True, foreach=True)),
        # The first moment in bfloat16 (moment_dtype): p, g, v 4 B and m 2 B, read and written: 24 B.
        Entry("Adam(bf16 m)", 24, _ol("Adam", **adam, moment_dtype=torch.bfloat16),
              fused=lambda ps: optim.Adam(ps, **adam, fused=True),
              note="torch fused keeps m in fp32 (28 B/p)"),
        Entry("NAdam", 28, _ol("NAdam", lr=2e-3),
              foreach=lambda ps: optim.NAdam(ps, lr=2e-3, foreach=True)),
        Entry("RAdam", 28, _ol("RAdam", **adam),
              foreach=lambda ps: optim.RAdam(ps, **adam, foreach=True)),
        Entry("AdaBound", 28, _ol("AdaBound", lr=1e-3, final_lr=0.1),
              peers=peers(pytorch_optimizer=pf(po, "AdaBound", lr=1e-3, final_lr=0.1),
                          torch_optimizer=pf(to, "AdaBound", lr=1e-3, final_lr=0.1))),
        Entry("AMSBound", 36, _ol("AMSBound", lr=1e-3, final_lr=0.1),
              peers=peers(pytorch_optimizer=pf(po, "AdaBound", lr=1e-3, final_lr=0.1, ams_bound=True),
                          torch_optimizer=pf(to, "AdaBound", lr=1e-3, final_lr=0.1, amsbound=True))),
        # LARS: a first pass reads p and g for the two norms (8 B), the second is SGD with momentum (20 B).
        Entry("LARS", 28, _ol("LARS", lr=0.1, momentum=0.9, weight_decay=wd),
              peers=peers(pytorch_optimizer=pf(po, "LARS", lr=0.1, momentum=0.9, weight_decay=wd),
                          torch_optimizer=pf(to, "LARS", lr=0.1, momentum=0.9, weight_decay=wd),
                          timm=pf(timm.get("lars"), "Lars", lr=0.1, momentum=0.9, weight_decay=wd))),
        # LAMB: pass 1 updates m, v and accumulates the norms (24 B); pass 2 reads p, m, v, writes p (16 B).
        Entry("LAMB", 40, _ol("LAMB", lr=1e-3, weight_decay=wd),
              peers=peers(pytorch_optimizer=pf(po, "Lamb", lr=1e-3, weight_decay=wd),
                          torch_optimizer=pf(to, "Lamb", lr=1e-3, weight_decay=wd),
                          timm=pf(timm.get("lamb"), "Lamb", lr=1e-3, weight_decay=wd))),
        # SWATS in each phase, every implementation in the same one: the Adam phase (optimlab with a switching
        # tolerance nothing meets), then the SGD phase (optimlab switches at step 2 with a wide tolerance). The
        # peers do not switch on these gradients within the warm-up, so their group's phase is pinned.
        Entry("SWATS(adam)", 28, _ol("SWATS", lr=1e-3, switch_tol=1e-300),
              peers=peers(pytorch_optimizer=pin(pf(po, "SWATS", lr=1e-3), "adam"),
                          torch_optimizer=pin(pf(to, "SWATS", lr=1e-3), "ADAM")), phase="adam"),
        Entry("SWATS(sgd)", 20, _ol("SWATS", lr=1e-3, switch_tol=1.0),
              peers=peers(pytorch_optimizer=pin(pf(po, "SWATS", lr=1e-3), "sgd"),
                          torch_optimizer=pin(pf(to, "SWATS", lr=1e-3), "SGD")), phase="sgd"),
        # Lookahead(Adam, k=5): Adam's 28 B each step + reading p, slow and writing both every k-th step.
        Entry("Lookahead(Adam)", 28 + 16 / 5, lookahead_ol if has_lookahead() else None,
              peers=peers(pytorch_optimizer=la_peer(po, "Lookahead"),
                          torch_optimizer=la_peer(to, "Lookahead"),
                          timm=la_peer(timm.get("lookahead"), "Lookahead")),
              k=5, note="peers wrap torch.optim.Adam (default, foreach)"),
    ]
    entries += _after_adam_entries(_ol, pf, peers, po)
    entries += _cautious_entries(_ol, pf, peers, timm)
    return entries, notes


def _cautious_entries(_ol: Callable[..., Factory | None], pf: Callable[..., Factory | None],
                      peers: Callable[..., dict[str, Factory]], timm: dict[str, types.ModuleType]) -> list[Entry]:
    """Cautious updates and cautious weight decay (issue 26) beside the same rule without them (the rows above)
    and timm's ``caution=True``. The mask's mean is a per-tensor reduction, so the minimal traffic is two passes:
    AdamW: pass 1 reads g and updates m, v counting the mask (20 B), pass 2 reads p, g, m, v and writes p (20 B);
    Lion: pass 1 reads g, m (8 B), pass 2 Lion's 20 B; SGD momentum: 8 B + 20 B. Cautious weight decay is
    element-wise: AdamW's 28 B."""
    wd = 1e-2
    adam = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)
    return [
        Entry("AdamW(cautious)", 40, _ol("AdamW", **adam, cautious=True),
              peers=peers(timm=pf(timm.get("adamw"), "AdamWLegacy", **adam, caution=True, foreach=True))),
        Entry("AdamW(cwd)", 28, _ol("AdamW", **adam, cautious_weight_decay=True)),
        Entry("Lion(cautious)", 28, _ol("Lion", lr=1e-4, weight_decay=wd, cautious=True),
              peers=peers(timm=pf(timm.get("lion"), "Lion", lr=1e-4, weight_decay=wd, caution=True, foreach=True))),
        Entry("SGD(cautious)", 28, _ol("SGD", lr=1e-2, momentum=0.9, cautious=True)),
    ]


def _after_adam_entries(_ol: Callable[..., Factory | None], pf: Callable[..., Factory | None],
                        peers: Callable[..., dict[str, Factory]], po: Any) -> list[Entry]:
    """The optimizers after Adam (issue 12): torch's remaining classes beside torch's foreach, the others beside the
    authors' packages (schedulefree, prodigyopt, lion-pytorch) and pytorch_optimizer where installed."""
    optim = torch.optim
    sf = _optional("schedulefree")
    prodigyopt = _optional("prodigyopt")
    lion = _optional("lion_pytorch")
    wd = 1e-2

    def train_mode(factory: Factory | None) -> Factory | None:  # Schedule-Free peers must be put in train mode
        return None if factory is None else (lambda ps: _train(factory(ps)))

    return [
        Entry("Adamax", 28, _ol("Adamax", lr=2e-3), foreach=lambda ps: optim.Adamax(ps, lr=2e-3, foreach=True)),
        Entry("Adadelta", 28, _ol("Adadelta"), foreach=lambda ps: optim.Adadelta(ps, foreach=True)),
        # ASGD before t0 (default 1e6): the average is a copy of p, written, not read; but a write to memory costs a
        # read of the line too (write-allocate), as the probe's: p, g read, p, ax written = 20 B.
        Entry("ASGD", 20, _ol("ASGD", lr=1e-2), foreach=lambda ps: optim.ASGD(ps, lr=1e-2, foreach=True)),
        Entry("Rprop", 28, _ol("Rprop", lr=1e-2), foreach=lambda ps: optim.Rprop(ps, lr=1e-2, foreach=True)),
        # Adafactor on matrices: pass 1 reads p and g (norm, factors), pass 2 g (the update's norm), pass 3 p, g and
        # writes p: 24 B; torch's default is its for-loop (foreach=None), listed as a peer.
        Entry("Adafactor", 24, _ol("Adafactor", lr=1e-2), foreach=lambda ps: optim.Adafactor(ps, foreach=True),
              peers=peers(torch_forloop=lambda ps: optim.Adafactor(ps),
                          pytorch_optimizer=pf(po, "AdaFactor", lr=1e-2))),
        Entry("Lion", 20, _ol("Lion", lr=1e-4, weight_decay=wd),
              peers=peers(lion_pytorch=pf(lion, "Lion", lr=1e-4, weight_decay=wd),
                          pytorch_optimizer=pf(po, "Lion", lr=1e-4, weight_decay=wd))),
        Entry("SF-SGD", 20, _ol("ScheduleFreeSGD", lr=1.0),
              peers=peers(schedulefree=train_mode(pf(sf, "SGDScheduleFree", lr=1.0)),
                          pytorch_optimizer=train_mode(pf(po, "ScheduleFreeSGD", lr=1.0)))),
        Entry("SF-AdamW", 28, _ol("ScheduleFreeAdamW", lr=2.5e-3),
              peers=peers(schedulefree=train_mode(pf(sf, "AdamWScheduleFree", lr=2.5e-3)),
                          pytorch_optimizer=train_mode(pf(po, "ScheduleFreeAdamW", lr=2.5e-3))),
              note="schedulefree's foreach path divides p.grad in place"),
        Entry("AdEMAMix", 36, _ol("AdEMAMix", lr=1e-3, alpha=8.0, weight_decay=wd),
              peers=peers(pytorch_optimizer=pf(po, "AdEMAMix", lr=1e-3, alpha=8.0, weight_decay=wd,
                                               weight_decouple=True))),
        # MARS on matrices: pass 1 reads g and last_grad (||c_t||), pass 2 reads p, g, last_grad, m, v and writes
        # p, last_grad, m, v: 44 B (the model's few 1-D and 4-D tensors take AdamW's 28 B).
        Entry("MARS", 44, _ol("MARS", lr=3e-3, weight_decay=wd),
              peers=peers(pytorch_optimizer=pf(po, "MARS", lr=3e-3, weight_decay=wd))),
        # Prodigy: pass 1 reads p, g, p0, m, v, s and writes m, v, s (36 B); pass 2 reads p, m, v, writes p (16 B).
        Entry("Prodigy", 52, _ol("Prodigy", lr=1.0),
              peers=peers(prodigyopt=pf(prodigyopt, "Prodigy", lr=1.0),
                          pytorch_optimizer=pf(po, "Prodigy", lr=1.0))),
        Entry("ADOPT", 28, _ol("ADOPT", lr=1e-3),
              peers=peers(pytorch_optimizer=pf(po, "ADOPT", lr=1e-3))),
    ]


def _train(opt: Any) -> Any:
    opt.train()
    return opt


# ----------------------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------------------
def _fmt(x: float | None, spec: str) -> str:
    width = int(spec.split(".")[0])
    return "-".rjust(width) if x is None or not math.isfinite(x) else format(x, spec)


def _ratio(a: Result | None, b: Result | None) -> float | None:
    return a.ms / b.ms if a is not None and b is not None else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=float, default=25e6, help="number of parameters (default 25e6)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per optimizer (default 20)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps, the first included (default 3)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="times to measure each implementation; the fastest is kept (busy machines)")
    ap.add_argument("--only", default="", help="comma-separated entry names, e.g. Adam,LAMB,Lion,SF-AdamW")
    ap.add_argument("--no-peers", action="store_true", help="skip the peer libraries")
    ap.add_argument("--quick", action="store_true", help="~1M parameters and 5 steps: a smoke test")
    ap.add_argument("--warm-cache", action="store_true",
                    help="use the user's kernel cache (default: a fresh one, so first steps include compiling)")
    ap.add_argument("--malloc-tunables", action="store_true",
                    help="re-execute with the glibc malloc settings that keep freed memory mapped")
    ap.add_argument("--small", action="store_true",
                    help="the small-model case (300 x 64: host overhead) instead of the 25M tables")
    ap.add_argument("--gpu", action="store_true", help="the GPU section only (it also follows the CPU tables "
                    "when CUDA is present, unless --no-gpu)")
    ap.add_argument("--no-gpu", action="store_true", help="skip the GPU section after the CPU tables")
    ap.add_argument("--gpu-size", type=float, default=100e6, help="parameters of the GPU model (default 100e6)")
    ap.add_argument("--gpu-smoke", action="store_true",
                    help="the GPU section's code on CPU tensors under Triton's interpreter, tiny (a smoke test)")
    args = ap.parse_args(argv)

    if args.malloc_tunables and any(os.environ.get(k) != v for k, v in MALLOC_TUNABLES.items()):
        env = dict(os.environ, **MALLOC_TUNABLES)
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    extra = extra_sections(args)
    if extra is not None:
        return extra
    if args.quick:
        args.size, args.steps, args.warmup = min(args.size, 1e6), min(args.steps, 5), min(args.warmup, 2)
    torch.set_num_threads(args.threads)
    if not args.warm_cache:
        os.environ["OPTIMLAB_KERNEL_CACHE"] = tempfile.mkdtemp(prefix="optimlab-kernels-")
    params, init = make_model(int(args.size))
    grads = [p.grad.detach().clone() for p in params]
    n = sum(p.numel() for p in params)

    entries, notes = build_registry()
    if not args.no_peers:
        deepspeed_peers(entries, notes)
    if args.only:
        wanted = {s.strip().lower() for s in args.only.split(",") if s.strip()}
        unknown = wanted - {e.name.lower() for e in entries}
        if unknown:
            ap.error(f"--only: unknown name(s) {sorted(unknown)}; choose from {[e.name for e in entries]}")
        entries = [e for e in entries if e.name.lower() in wanted]

    malloc = {k: os.environ[k] for k in MALLOC_TUNABLES if k in os.environ}
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    print(f"torch {torch.__version__}, {cpu}, {os.cpu_count()} CPUs, "
          f"torch threads {torch.get_num_threads()}, Python {platform.python_version()}")
    print("malloc: " + (" ".join(f"{k}={v}" for k, v in malloc.items()) if malloc else "glibc defaults")
          + ("" if malloc else " (--malloc-tunables for the tuned setting)"))
    print(f"model: {n:,} fp32 parameters in {len(params)} tensors; {args.steps} timed steps after "
          f"{args.warmup} warm-up steps; best of {max(1, args.rounds)} round(s)")
    gbs0 = probe_gbs(n)
    print(f"bandwidth probe (in-place add, 12 B/elem): {gbs0:.1f} GB/s -> Adam bound (28 B/param) "
          f"{28 * n / gbs0 / 1e6:.2f} ms")
    kernels = sys.modules.get("optimlab.core.kernels")
    if kernels is not None:
        cc = kernels.compiler()
        print(f"optimlab kernels: {'on' if kernels.enabled() else 'off'}; compiler "
              f"{' '.join(cc) if cc else 'none'}; cache {kernels.cache_dir()} "
              f"({'warm: --warm-cache' if args.warm_cache else 'fresh: first steps include compiling'})")
    for note in notes:
        print("note: " + note)
    print()

    rows: list[tuple[Entry, dict[str, Result], dict[str, Result]]] = []
    all_results: list[tuple[str, Result]] = []
    for e in entries:
        impls: list[tuple[str, Factory]] = []
        if e.optimlab is not None:
            impls.append(("optimlab", e.optimlab))
        if e.fused is not None:
            impls.append(("torch fused", e.fused))
        if e.foreach is not None:
            impls.append(("torch foreach", e.foreach))
        if not args.no_peers:
            impls.extend(e.peers.items())
        own: dict[str, Result] = {}
        peer: dict[str, Result] = {}
        for label, factory in impls:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    rs = [measure(label, factory, params, init, n, args.steps, args.warmup, e.k, e.phase, grads)
                          for _ in range(max(1, args.rounds))]
                r = min(rs, key=lambda x: x.ms)  # the fastest round, with the probe taken during it
                r.first_s = rs[0].first_s  # the first construction: with a cold kernel cache, compiling included
            except Exception as exc:  # noqa: BLE001 - a broken peer must not stop the benchmark
                print(f"  {e.name} / {label}: failed: {type(exc).__name__}: {str(exc)[:150]}")
                continue
            (own if label in ("optimlab", "torch fused", "torch foreach") else peer)[label] = r
            all_results.append((f"{e.name} / {label}", r))
            xb = r.ms / (e.min_bytes * n / r.gbs / 1e6)
            print(f"  {e.name:<16} {label:<18} {r.ms:8.2f} ms  ({xb:.2f}x bound, probe {r.gbs:.1f} GB/s)",
                  flush=True)
        rows.append((e, own, peer))

    print()
    print("Table 1: ms per step; x bound = time / bandwidth bound of the algorithm's minimal traffic (B/p "
          "bytes per parameter); /fused, /foreach, /peer = optimlab time / that time")
    hdr = (f"{'optimizer':<16} {'B/p':>4} {'optimlab ms':>11} {'x bound':>7} {'fused ms':>8} {'/fused':>6} "
           f"{'foreach ms':>10} {'/foreach':>8} {'best peer':>18} {'peer ms':>8} {'/peer':>6}")
    print(hdr)
    print("-" * len(hdr))
    for e, own, peer in rows:
        ol = own.get("optimlab")
        fu = own.get("torch fused")
        fe = own.get("torch foreach")
        best = min(peer.items(), key=lambda kv: kv[1].ms) if peer else None
        xb = ol.ms / (e.min_bytes * n / ol.gbs / 1e6) if ol else None
        bp = best[1] if best else None
        print(f"{e.name:<16} {e.min_bytes:>4g} {_fmt(ol.ms if ol else None, '11.2f')} {_fmt(xb, '7.2f')} "
              f"{_fmt(fu.ms if fu else None, '8.2f')} {_fmt(_ratio(ol, fu), '6.2f')} "
              f"{_fmt(fe.ms if fe else None, '10.2f')} {_fmt(_ratio(ol, fe), '8.2f')} "
              f"{(best[0] if best else '-'):>18} {_fmt(bp.ms if bp else None, '8.2f')} "
              f"{_fmt(_ratio(ol, bp), '6.2f')}" + (f"   ({e.note})" if e.note else ""))
    print()
    print("Table 2: optimizer state and start-up (first step of a fresh optimizer; optimlab's includes "
          "compiling its kernels unless --warm-cache)")
    hdr2 = f"{'optimizer / implementation':<40} {'state B/param':>13} {'first step s':>12} {'ms/step':>8}"
    print(hdr2)
    print("-" * len(hdr2))
    for label, r in all_results:
        print(f"{label:<40} {r.state_bpp:13.2f} {r.first_s:12.3f} {r.ms:8.2f}")
    if torch.cuda.is_available() and not args.no_gpu:
        print()
        return gpu_section(entries, args, torch.device("cuda"))
    return 0


# ----------------------------------------------------------------------------------------------------------
# the small-model case (host overhead), the CPU-offload anchor (DeepSpeed), the GPU section
# ----------------------------------------------------------------------------------------------------------
#: The small-model case: 300 tensors of 64 elements (19,200 parameters), where a step's time is the host's.
SMALL_TENSORS, SMALL_NUMEL = 300, 64
#: Where optimlab should match torch's fused kernel on the small model; every other row is held to torch's
#: foreach counterpart or 1.5x optimlab's Adam, whichever is slower.
SMALL_FUSED_TARGETS = ("Adam", "SGD")
#: GPU targets: these at least 2x faster than torch's foreach path, else than the fastest peer.
GPU_2X_TARGETS = ("LAMB", "LARS", "NAdam", "RAdam", "AdaBound", "Lion", "AdEMAMix")
GPU_FUSED_TARGETS = ("Adam", "AdamW")


def make_small_model(tensors: int = SMALL_TENSORS, numel: int = SMALL_NUMEL,
                     seed: int = 0) -> tuple[list[torch.nn.Parameter], list[torch.Tensor]]:
    """``tensors`` fp32 parameters of ``numel`` elements with ``.grad`` set, and a pristine copy of their values."""
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(numel, generator=gen) * 0.05) for _ in range(tensors)]
    for p in params:
        p.grad = torch.randn(numel, generator=gen) * 1e-2
    return params, [p.detach().clone() for p in params]


def deepspeed_peers(entries: list[Entry], notes: list[str]) -> None:
    """DeepSpeed's ``DeepSpeedCPUAdam`` (ZeRO-Offload's AVX-512/AVX2 C++ Adam with OpenMP, built at run time by
    DeepSpeed's op builder) as a peer of the CPU Adam and AdamW rows, where DeepSpeed is installed. The first
    construction builds the op (about a minute; cached in ``~/.cache/torch_extensions``), so its Table 2 first
    step includes loading or building it."""
    if importlib.util.find_spec("deepspeed") is None:
        notes.append("peer DeepSpeedCPUAdam: deepspeed not installed (pip install --no-deps deepspeed hjson "
                     "msgpack einops py-cpuinfo pydantic ninja; needs a C++ compiler)")
        return

    def ds_adam(**kw: Any) -> Factory:
        def make(ps: list[torch.Tensor]) -> Any:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from deepspeed.ops.adam import DeepSpeedCPUAdam  # noqa: PLC0415 - optional, slow to import

            return DeepSpeedCPUAdam(ps, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, **kw)

        return make

    version = getattr(_optional("deepspeed"), "__version__", "installed")
    notes.append(f"peer DeepSpeedCPUAdam: deepspeed {version} (CPU rows only; built by its op builder on first use)")
    for e in entries:
        if e.name == "Adam":
            e.peers["deepspeed_cpu_adam"] = ds_adam(adamw_mode=False)
        elif e.name == "AdamW":
            e.peers["deepspeed_cpu_adam"] = ds_adam(adamw_mode=True, weight_decay=1e-2)


def small_model_case(entries: list[Entry], args: argparse.Namespace) -> int:
    """Table S: the small-model case, ms per step of optimlab beside torch's fused and foreach implementations,
    each implementation timed in turn, ``--rounds`` times (the fastest round kept), every row against its target."""
    steps, warmup, rounds = max(args.steps, 200), max(args.warmup, 20), max(3, args.rounds)
    if args.quick:
        steps, warmup, rounds = 50, 5, 1
    params, init = make_small_model()
    n = sum(p.numel() for p in params)
    print(f"small model: {n:,} fp32 parameters in {len(params)} tensors of {SMALL_NUMEL}; median of {steps} "
          f"steps after {warmup}, fastest of {rounds} rounds, implementations interleaved; torch threads "
          f"{torch.get_num_threads()}")
    if not any(e.name == "Adam" for e in entries):  # the 1.5x-Adam target needs optimlab's Adam
        entries = [e for e in build_registry()[0] if e.name == "Adam"] + entries
    results: dict[tuple[str, str], Result] = {}
    for e in entries:
        impls = [(label, f) for label, f in (("optimlab", e.optimlab), ("torch fused", e.fused),
                                             ("torch foreach", e.foreach)) if f is not None]
        for _ in range(rounds):
            for label, factory in impls:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        r = measure(label, factory, params, init, n, steps, warmup, e.k, e.phase)
                except Exception as exc:  # noqa: BLE001 - report and go on
                    print(f"  {e.name} / {label}: failed: {type(exc).__name__}: {str(exc)[:150]}")
                    continue
                best = results.get((e.name, label))
                if best is None or r.ms < best.ms:
                    results[(e.name, label)] = r
    adam = results.get(("Adam", "optimlab"))
    print()
    print("Table S: us per step on the small model; target: Adam and SGD(momentum) <= torch fused, every other "
          "optimizer <= torch foreach or <= 1.5x optimlab's Adam")
    hdr = (f"{'optimizer':<16} {'optimlab us':>11} {'fused us':>8} {'/fused':>6} {'foreach us':>10} {'/foreach':>8} "
           f"{'/Adam':>6}  target")
    print(hdr)
    print("-" * (len(hdr) + 20))
    for e in entries:
        ol, fu, fe = (results.get((e.name, k)) for k in ("optimlab", "torch fused", "torch foreach"))
        if ol is None:
            continue
        if e.name in SMALL_FUSED_TARGETS and fu is not None:
            ok, target = ol.ms <= fu.ms, "<= fused"
        else:
            ok = (fe is not None and ol.ms <= fe.ms) or (adam is not None and ol.ms <= 1.5 * adam.ms)
            target = "<= foreach or 1.5x Adam"
        print(f"{e.name:<16} {ol.ms * 1e3:11.0f} {_fmt(fu.ms * 1e3 if fu else None, '8.0f')} "
              f"{_fmt(_ratio(ol, fu), '6.2f')} {_fmt(fe.ms * 1e3 if fe else None, '10.0f')} "
              f"{_fmt(_ratio(ol, fe), '8.2f')} {_fmt(_ratio(ol, adam), '6.2f')}  {target}: "
              f"{'meets' if ok else 'misses'}")
    return 0


@contextmanager
def triton_backend() -> Iterator[None]:
    """optimlab's list path on the Triton kernels of :mod:`optimlab.core.triton_kernels` (the backend the
    dispatch of phase B will choose on CUDA): torch's fused kernels off, the Triton backend in the C backend's
    place (``usable``/``run`` have the same contract), as the tests run it."""
    from optimlab.core import kernels, tensors  # noqa: PLC0415
    from optimlab.core import triton_kernels as tk  # noqa: PLC0415

    saved = tensors.fused_kernels_support, kernels.usable, kernels.run
    tensors.fused_kernels_support, kernels.usable, kernels.run = (lambda ts: False), tk.usable, tk.run
    try:
        yield
    finally:
        tensors.fused_kernels_support, kernels.usable, kernels.run = saved


def copy_gbs(n: int, device: torch.device, reps: int = 10) -> float:
    """Device copy bandwidth: ``dst.copy_(src)`` over ``n`` fp32 elements (8 B each: read + write), best of reps."""
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = math.inf
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 8 * n / best / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_device(factory: Factory, params: list[torch.nn.Parameter], init: list[torch.Tensor], steps: int,
                   warmup: int, k: int, phase: str | None, device: torch.device) -> tuple[float, float]:
    """(ms per step, first step s) on ``device``: the mean of ``steps`` steps between two synchronizations."""
    with torch.no_grad():
        for p, v in zip(params, init, strict=True):
            p.copy_(v)
    _sync(device)
    opt = factory(params)
    t = time.perf_counter()
    opt.step()
    _sync(device)
    first = time.perf_counter() - t
    for _ in range(max(0, warmup - 1)):
        opt.step()
    if phase is not None:
        for _ in range(20):
            if swats_phase(opt) == phase:
                break
            opt.step()
        if swats_phase(opt) != phase:
            raise RuntimeError(f"still in phase {swats_phase(opt)!r}, not {phase!r}: not comparable")
    count = steps if k == 1 else k * max(1, round(steps / k))
    _sync(device)
    t = time.perf_counter()
    for _ in range(count):
        opt.step()
    _sync(device)
    ms = (time.perf_counter() - t) / count * 1e3
    del opt
    gc.collect()
    return ms, first


def gpu_section(entries: list[Entry], args: argparse.Namespace, device: torch.device) -> int:
    """Table G: every optimizer on ``device`` (``--gpu-size`` fp32 parameters, default 100M): optimlab on its
    Triton kernels, optimlab's default path (torch's fused kernels and foreach lists), torch fused and foreach and
    the peers; achieved GB/s of the minimal traffic against the device's copy bandwidth, and the targets.
    ``--gpu-smoke`` runs the same code on CPU tensors under Triton's interpreter, on a tiny model."""
    from optimlab.core import triton_kernels as tk  # noqa: PLC0415

    size, steps, warmup = int(args.gpu_size), args.steps, args.warmup
    if args.gpu_smoke:
        size, steps, warmup = min(size, 20_000), 2, 1
    host, _ = make_model(size)
    params = [torch.nn.Parameter(p.detach().to(device)) for p in host]
    for p, h in zip(params, host, strict=True):
        p.grad = h.grad.to(device)
    init = [p.detach().clone() for p in params]
    del host
    n = sum(p.numel() for p in params)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (Triton interpreter: smoke test)"
    bw = copy_gbs(n, device)
    print(f"GPU section on {name}: {n:,} fp32 parameters in {len(params)} tensors; mean of {steps} steps after "
          f"{warmup}; Triton {'available' if tk.available() else 'NOT available'}; Triton cache "
          f"{os.environ.get('TRITON_CACHE_DIR', '~/.triton/cache')}")
    print(f"copy bandwidth (dst.copy_(src), 8 B/elem): {bw:.1f} GB/s")
    rows = []
    for e in entries:
        impls: list[tuple[str, Factory, bool]] = []
        if e.optimlab is not None:
            if tk.available():
                impls.append(("optimlab triton", e.optimlab, True))
            impls.append(("optimlab default", e.optimlab, False))
        impls += [(label, f, False) for label, f in (("torch fused", e.fused), ("torch foreach", e.foreach))
                  if f is not None]
        if not args.no_peers:
            impls += [(label, f, False) for label, f in e.peers.items() if not label.startswith("deepspeed")]
        got: dict[str, tuple[float, float, bool]] = {}
        for label, factory, on_triton in impls:
            runs = tk.stats()["runs"]
            try:
                with warnings.catch_warnings(), (triton_backend() if on_triton else contextlib.nullcontext()):
                    warnings.simplefilter("ignore")
                    ms, first = measure_device(factory, params, init, steps, warmup, e.k, e.phase, device)
            except Exception as exc:  # noqa: BLE001 - a broken implementation must not stop the run
                print(f"  {e.name} / {label}: failed: {type(exc).__name__}: {str(exc)[:150]}")
                continue
            ran = tk.stats()["runs"] > runs
            got[label] = (ms, first, ran)
            gbs = e.min_bytes * n / (ms * 1e-3) / 1e9
            print(f"  {e.name:<16} {label:<18} {ms:9.3f} ms  {gbs:7.1f} GB/s ({gbs / bw:5.0%} of copy)  first "
                  f"{first:6.2f} s" + ("" if ran or not on_triton else "  (no Triton kernel ran: eager path)"),
                  flush=True)
        rows.append((e, got))
    print()
    print("Table G: ms per step; %copy = achieved GB/s of the minimal traffic (B/p) / copy bandwidth; ratios = "
          "optimlab triton / that; first = first step of a fresh optimizer (cold Triton cache unless --warm-cache)")
    hdr = (f"{'optimizer':<16} {'triton ms':>9} {'%copy':>5} {'default ms':>10} {'fused ms':>8} {'/fused':>6} "
           f"{'foreach ms':>10} {'/foreach':>8} {'best peer':>18} {'/peer':>6} {'first s':>7}  targets")
    print(hdr)
    print("-" * (len(hdr) + 30))
    for e, got in rows:
        tr = got.get("optimlab triton")
        de, fu, fe = (got.get(k) for k in ("optimlab default", "torch fused", "torch foreach"))
        peers = {k: v for k, v in got.items() if k not in ("optimlab triton", "optimlab default", "torch fused",
                                                            "torch foreach")}
        best = min(peers.items(), key=lambda kv: kv[1][0]) if peers else None
        pct = (e.min_bytes * n / (tr[0] * 1e-3) / 1e9) / bw if tr else None

        def ratio(x: tuple[float, float, bool] | None, tr: tuple[float, float, bool] | None = tr) -> float | None:
            return tr[0] / x[0] if tr and x else None

        verdicts = []
        if tr is not None:
            verdicts.append(f">=80% copy: {'meets' if pct >= 0.8 else 'misses'}")
            if e.name in GPU_FUSED_TARGETS and fu is not None:
                verdicts.append(f"<=1.05x fused: {'meets' if tr[0] <= 1.05 * fu[0] else 'misses'}")
            ref = fe if fe is not None else (best[1] if best else None)
            if e.name in GPU_2X_TARGETS and ref is not None:
                verdicts.append(f"2x faster: {'meets' if 2 * tr[0] <= ref[0] else 'misses'}")
            verdicts.append(f"first <=10 s: {'meets' if tr[1] <= 10 else 'misses'}")
            if not tr[2]:
                verdicts = ["no Triton kernel ran"]
        print(f"{e.name:<16} {_fmt(tr[0] if tr else None, '9.3f')} {_fmt(pct * 100 if pct else None, '5.0f')} "
              f"{_fmt(de[0] if de else None, '10.3f')} {_fmt(fu[0] if fu else None, '8.3f')} "
              f"{_fmt(ratio(fu), '6.2f')} {_fmt(fe[0] if fe else None, '10.3f')} {_fmt(ratio(fe), '8.2f')} "
              f"{(best[0] if best else '-'):>18} {_fmt(ratio(best[1]) if best else None, '6.2f')} "
              f"{_fmt(tr[1] if tr else None, '7.2f')}  " + "; ".join(verdicts))
    return 0


def extra_sections(args: argparse.Namespace) -> int | None:
    """Run ``--small`` or ``--gpu``/``--gpu-smoke`` instead of the 25M-parameter tables; None: neither asked."""
    if not (args.small or args.gpu or args.gpu_smoke):
        return None
    torch.set_num_threads(args.threads)
    if args.gpu_smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # this process only: the Triton kernels run on CPU tensors
    if not args.warm_cache:
        os.environ["OPTIMLAB_KERNEL_CACHE"] = tempfile.mkdtemp(prefix="optimlab-kernels-")
        os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="optimlab-triton-")
    entries, notes = build_registry()
    if args.small and not args.no_peers:
        deepspeed_peers(entries, notes)
    if args.only:
        wanted = {s.strip().lower() for s in args.only.split(",") if s.strip()}
        entries = [e for e in entries if e.name.lower() in wanted]
    elif args.gpu_smoke:
        entries = [e for e in entries if e.name in ("Adam", "LAMB", "SWATS(adam)", "Lookahead(Adam)")]
    print(f"torch {torch.__version__}, Python {platform.python_version()}, torch threads {torch.get_num_threads()}")
    for note in notes:
        print("note: " + note)
    status = 0
    if args.small:
        status |= small_model_case(entries, args)
        print()
    if args.gpu or args.gpu_smoke:
        if args.gpu_smoke:
            status |= gpu_section(entries, args, torch.device("cpu"))
        elif torch.cuda.is_available():
            status |= gpu_section(entries, args, torch.device("cuda"))
        else:
            print("GPU section: no CUDA device here (torch.cuda.is_available() is False); nothing measured")
    return status


if __name__ == "__main__":
    sys.exit(main())
