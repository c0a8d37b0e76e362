"""optimlab.core.kernels: tracing a rule, the C it becomes, and every way back to the eager path."""

from __future__ import annotations

import os
import stat

import pytest
import torch

import optimlab
from optimlab.core import kernels, ops

needs_compiler = pytest.mark.skipif(not kernels.enabled(), reason="no C compiler: compiled kernels are off")


def _tensors(n: int, sizes: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> list[list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=gen, dtype=dtype) for s in sizes] for _ in range(n)]


def _every_op(x, y, z):
    """Each operation a rule may use, through :mod:`optimlab.core.ops` (the functions rules are written with).
    Denominators are kept away from zero, so the result is well conditioned and round-off stays at a few ulps
    of the intermediates (|x| < 10): the kernel may contract ``a + b*c`` into one FMA where torch does not."""
    a = ops.add(x, y, alpha=0.3)
    ops.add_(a, z, alpha=-2.0)
    ops.add_scalar_(a, 0.25)
    a = torch.sub(torch.add(a, 0.5, alpha=3.0), 0.25, alpha=2.0)  # scalar operands with alpha, as torch has them
    b = ops.mul(ops.neg(a), 1.5)
    ops.mul_(b, y)
    c = ops.div(ops.sqrt(ops.addcmul_(ops.add_scalar_(ops.mul(z, z), 1.0), z, z, value=0.5)), 3.0)
    ops.div_(c, ops.add_scalar_(ops.mul(y, y), 1.0))
    ops.lerp_(b, c, 0.1)
    ops.lerp_(c, b, 0.9)  # torch switches formula at weight 0.5
    ops.addcdiv_(b, c, ops.add_scalar_(ops.sqrt(ops.mul(z, z)), 1.0), value=-0.7)
    ops.maximum_(c, b)
    ops.clamp_(b, -0.5, 0.75)
    ops.reciprocal_(ops.add_scalar_(ops.mul_(c, c), 4.0))
    ops.add_(x, b)
    ops.add_(z, c, alpha=0.5)
    return [ops.mul(b, b), ops.mul(c, y)]


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_op_matches_torch(dtype):
    sizes = (1, 17, 300, 4099)
    compiled = _tensors(3, sizes, dtype)
    eager = [[t.clone() for t in lst] for lst in compiled]
    y_before = [t.clone() for t in compiled[1]]
    sums = kernels.run(_every_op, compiled, readonly=(1,))
    want = [_every_op(*(lst[i] for lst in eager)) for i in range(len(sizes))]
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-13)
    for j in (0, 2):
        for a, b in zip(compiled[j], eager[j], strict=True):
            torch.testing.assert_close(a, b, **tol)
    for a, b in zip(compiled[1], y_before, strict=True):
        assert torch.equal(a, b)  # read-only input untouched
    expected = torch.tensor([[float(w[r].sum(dtype=torch.float64)) for w in want] for r in range(2)],
                            dtype=torch.float64)
    torch.testing.assert_close(sums, expected, **tol)


@needs_compiler
def test_nan_and_inf_propagate_as_in_torch():
    nan, inf = float("nan"), float("inf")
    x = torch.tensor([nan, 1.0, -inf, inf, 0.0, 2.0])
    y = torch.tensor([0.0, nan, 0.0, nan, -0.0, 3.0])

    def rule(a, b):
        ops.maximum_(a, b)
        ops.clamp_(b, -1.0, 1.0)

    got = [[x.clone()], [y.clone()]]
    assert kernels.run(rule, got) is None
    assert torch.equal(got[0][0].isnan(), torch.maximum(x, y).isnan())
    torch.testing.assert_close(got[0][0], torch.maximum(x, y), equal_nan=True)
    torch.testing.assert_close(got[1][0], y.clamp(-1.0, 1.0), equal_nan=True)


@needs_compiler
def test_per_tensor_scalars_and_threads_split_inside_tensors(monkeypatch):
    """Work is split over threads at element boundaries inside tensors; per-tensor sums add up across threads."""
    monkeypatch.setattr(kernels, "_MIN_PARALLEL_ELEMS", 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        sizes = (5, 1000, 0, 33, 2048)
        lists = _tensors(2, sizes, torch.float64)
        scale = torch.arange(1.0, len(sizes) + 1)
        before = [t.clone() for t in lists[0]]

        def rule(p, g, k):
            ops.add_(p, ops.mul(g, k))
            return [ops.mul(g, g)]

        sums = kernels.run(rule, lists, per_tensor=[scale], readonly=(1,))
    finally:
        torch.set_num_threads(threads)
    for i, (p, g, b) in enumerate(zip(lists[0], lists[1], before, strict=True)):
        torch.testing.assert_close(p, b + g * scale[i], rtol=1e-14, atol=1e-14)
        torch.testing.assert_close(sums[0, i], (g * g).sum(), rtol=1e-13, atol=0)


@needs_compiler
def test_writing_into_a_readonly_input_is_an_error():
    lists = _tensors(2, (8,), torch.float32)
    with pytest.raises(RuntimeError, match="never modify p.grad"):
        kernels.run(lambda p, g: ops.mul_(g, 2.0), lists, readonly=(1,))


@needs_compiler
def test_untraceable_rule_touches_nothing():
    lists = _tensors(2, (8, 3), torch.float32)
    before = [t.clone() for lst in lists for t in lst]

    def rule(p, g):
        ops.add_(p, g)
        ops.norms(p)  # a reduction over a tensor inside the rule: not element-wise

    assert kernels.run(rule, lists) is False
    assert all(torch.equal(a, b) for a, b in zip([t for lst in lists for t in lst], before, strict=True))


def test_usable_only_for_plain_contiguous_cpu_tensors_of_one_float_dtype(monkeypatch):
    monkeypatch.setattr(kernels, "enabled", lambda: True)
    a = torch.zeros(4, 3)
    assert kernels.usable([[a], [torch.zeros(4, 3)]])
    assert not kernels.usable([[a.t()], [torch.zeros(3, 4)]])
    assert not kernels.usable([[a], [torch.zeros(4, 3, dtype=torch.float64)]])
    assert not kernels.usable([[a.bfloat16()], [a.bfloat16()]])
    assert not kernels.usable([[]])
    monkeypatch.setattr(kernels, "enabled", lambda: False)
    assert not kernels.usable([[a], [a]])


def test_set_enabled_and_the_environment_switch(monkeypatch):
    previous = kernels.set_enabled(False)
    try:
        assert not kernels.enabled()
        runs = kernels.stats()["runs"]
        p = torch.nn.Parameter(torch.ones(10))
        p.grad = torch.ones(10)
        optimlab.NAdam([p]).step()
        assert kernels.stats()["runs"] == runs
    finally:
        kernels.set_enabled(previous)


def _fresh_compiler_lookup(monkeypatch, tmp_path, cc: str | None):
    monkeypatch.setattr(kernels, "_compiler_id", None)
    monkeypatch.setattr(kernels, "_compiler", None)
    monkeypatch.setattr(kernels, "_loaded", {})
    monkeypatch.setenv("OPTIMLAB_KERNEL_CACHE", str(tmp_path / "cache"))
    if cc is None:
        monkeypatch.setenv("PATH", str(tmp_path / "empty"))
        monkeypatch.delenv("CC", raising=False)
    else:
        monkeypatch.setenv("CC", cc)


def _nadam_trajectory() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    params = [torch.nn.Parameter(torch.randn(40, 3, generator=gen)), torch.nn.Parameter(torch.randn(7, generator=gen))]
    opt = optimlab.NAdam(params, lr=1e-2)
    for _ in range(5):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    return [p.detach().clone() for p in params]


def test_without_a_compiler_the_eager_path_runs(monkeypatch, tmp_path):
    _fresh_compiler_lookup(monkeypatch, tmp_path, None)
    assert kernels.compiler() is None and not kernels.enabled()
    runs = kernels.stats()["runs"]
    eager = _nadam_trajectory()
    assert kernels.stats()["runs"] == runs
    monkeypatch.undo()
    if kernels.enabled():
        torch.testing.assert_close(_nadam_trajectory(), eager, rtol=1e-6, atol=1e-7)


def test_a_failing_compiler_warns_once_and_falls_back(monkeypatch, tmp_path):
    fake = tmp_path / "fakecc"
    fake.write_text("#!/bin/sh\nif [ \"$1\" = --version ]; then echo fakecc 1.0; exit 0; fi\n"
                    "echo 'fakecc: cannot compile' >&2; exit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    _fresh_compiler_lookup(monkeypatch, tmp_path, str(fake))
    assert kernels.compiler() == [str(fake)]
    failed = kernels.stats()["failed"]
    with pytest.warns(RuntimeWarning, match="cannot compile"):
        _nadam_trajectory()
    assert kernels.stats()["failed"] == failed + 1  # one attempt per kernel, then the eager path every step
    assert not list((tmp_path / "cache").glob("*.so"))


@needs_compiler
def test_kernels_are_cached_on_disk_by_source(monkeypatch, tmp_path):
    monkeypatch.setenv("OPTIMLAB_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setattr(kernels, "_loaded", {})
    assert kernels.cache_dir() == tmp_path
    compiled = kernels.stats()["compiled"]
    lists = _tensors(2, (9,), torch.float32)
    kernels.run(lambda p, g: ops.add_(p, g, alpha=0.123), lists)
    kernels.run(lambda p, g: ops.add_(p, g, alpha=-7.0), lists)  # another lr: the same kernel
    assert kernels.stats()["compiled"] == compiled + 1
    assert len(list(tmp_path.glob("optimlab_*.so"))) == 1 and len(list(tmp_path.glob("optimlab_*.c"))) == 1
    monkeypatch.setattr(kernels, "_loaded", {})  # a new process: loads, does not compile
    kernels.run(lambda p, g: ops.add_(p, g, alpha=1.0), lists)
    assert kernels.stats()["compiled"] == compiled + 1
    assert os.access(next(tmp_path.glob("optimlab_*.so")), os.R_OK)


@needs_compiler
@pytest.mark.parametrize("name", ["NAdam", "LAMB"])
def test_ten_thousand_steps_compile_once_and_keep_the_state_size(name):
    """No growth over 10,000 steps: the kernels are traced every step but compiled and loaded once, and the
    state keeps its tensors (same storage, same size)."""
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in ((16, 8), (8,))]
    grads = [torch.randn(p.shape, generator=gen) * 1e-3 for p in params]
    opt = getattr(optimlab, name)(params, lr=1e-4)
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    for _ in range(10):
        opt.step()
    loaded, runs = kernels.stats()["loaded"], kernels.stats()["runs"]
    storages = {(i, k): v.data_ptr() for i, p in enumerate(params) for k, v in opt.state[p].items() if v.dim()}
    for _ in range(10_000):
        opt.step()
    assert kernels.stats()["loaded"] == loaded
    assert kernels.stats()["runs"] - runs >= 10_000
    assert storages == {(i, k): v.data_ptr() for i, p in enumerate(params) for k, v in opt.state[p].items()
                        if v.dim()}


@needs_compiler
def test_processes_compiling_the_same_kernel_at_once(tmp_path):
    """DDP ranks start together on an empty cache: each compiles into its own temporary file and renames it
    atomically, so none reads a half-written source or loads a half-written library."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import warnings, torch, optimlab
        from optimlab.core import kernels
        warnings.simplefilter("error")
        p = torch.nn.Parameter(torch.ones(1000))
        p.grad = torch.full((1000,), 0.5)
        optimlab.NAdam([p], lr=0.1).step()
        assert kernels.stats()["runs"] == 1 and kernels.stats()["failed"] == 0, kernels.stats()
    """)
    env = dict(os.environ, OPTIMLAB_KERNEL_CACHE=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert len(list(tmp_path.glob("*.so"))) == 1 and not list(tmp_path.glob("optimlab_*_*"))


def _loaded_openmp_runtimes() -> set[str]:
    with open("/proc/self/maps") as f:
        return {line.split()[-1] for line in f if "libgomp" in line or "libomp" in line}


@needs_compiler
@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="Linux only")
def test_kernels_run_on_torchs_openmp_threads():
    """Where torch uses GNU libgomp, kernels link against the very file torch loaded: no second runtime (whose
    threads would compete with torch's) is loaded."""
    library = kernels._openmp_library()
    if library is None:
        pytest.skip("torch does not run on GNU libgomp here: kernels use POSIX threads")
    before = _loaded_openmp_runtimes()
    assert library in before
    lists = _tensors(2, (300_000, 5), torch.float32)
    kernels.run(lambda p, g: ops.add_(p, g, alpha=0.25), lists)
    assert _loaded_openmp_runtimes() == before


@needs_compiler
@pytest.mark.parametrize("runtime", ["openmp", "pthreads"])
def test_both_thread_runtimes_give_the_same_sums(monkeypatch, tmp_path, runtime):
    monkeypatch.setenv("OPTIMLAB_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setattr(kernels, "_loaded", {})
    monkeypatch.setattr(kernels, "_MIN_PARALLEL_ELEMS", 1)
    if runtime == "pthreads":
        monkeypatch.setattr(kernels, "_omp", "")
    elif kernels._openmp_library() is None:
        pytest.skip("torch does not run on GNU libgomp here")
    threads = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        lists = _tensors(2, (1000, 7, 33), torch.float64)
        sums = kernels.run(lambda p, g: [ops.mul(p, g)], lists)
    finally:
        torch.set_num_threads(threads)
    expected = torch.stack([(p * g).sum() for p, g in zip(*lists, strict=True)])
    torch.testing.assert_close(sums[0], expected, rtol=1e-13, atol=0)
    assert ("#define OPTIMLAB_OPENMP" in next(tmp_path.glob("*.c")).read_text()) == (runtime == "openmp")


@needs_compiler
@pytest.mark.parametrize("name", ["LAMB", "LARS"])
def test_second_pass_finishes_eagerly_when_its_kernel_cannot_run(name, monkeypatch):
    """The first pass (moments or norms) ran compiled, the second cannot: the step is finished eagerly with the
    norms already taken, and equals the plain loop."""
    real, first_passes = kernels.run, []

    def second_pass_fails(rule, *args, **kwargs):
        if rule.__name__ == "apply":
            return False
        first_passes.append(rule.__name__)
        return real(rule, *args, **kwargs)

    monkeypatch.setattr(kernels, "run", second_pass_fails)
    results = []
    for foreach in (True, False):
        gen = torch.Generator().manual_seed(3)
        params = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float64)) for s in ((30, 4), (4,))]
        opt = getattr(optimlab, name)(params, lr=0.01, weight_decay=0.01, foreach=foreach)
        for _ in range(5):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            opt.step()
        results.append(params)
    assert len(first_passes) == 5  # the compiled first pass ran on every step of the foreach run
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


# -- ops added for the optimizers after Adam (issue 12): abs, sign, comparisons, where, copy_ -------------------------
def _sign_and_mask_ops(x, y, z):
    """abs, sign, gt/ge/lt/le, where (tensor and scalar branches) and copy_, through :mod:`optimlab.core.ops`."""
    s = ops.sign(ops.mul(x, y))
    grown = ops.where(ops.gt(s, 0.0), ops.mul(z, 1.2), ops.where(ops.lt(s, 0.0), ops.mul(z, 0.5), z))
    ops.copy_(z, ops.clamp_(grown, 1e-3, None))
    a = ops.abs(x)
    ops.add_(x, ops.where(ops.ge(a, y), a, ops.sign(y)))
    ops.add_(x, ops.where(ops.le(y, -0.5), 0.0, ops.add_scalar(y, 0.25)))
    return [ops.where(ops.le(x, 0.5), x, 0.0), ops.abs(ops.sign(y)), ops.where(ops.gt(x, y), 1.0, z)]


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sign_abs_comparisons_where_match_torch_with_nan_and_signed_zero(dtype):
    """Bit for bit (these ops are exact): NaN and -0.0 in the inputs, where torch says sign(NaN) = sign(-0.0) = 0,
    |-0.0| = +0.0, |NaN| = NaN, and every comparison with NaN is false."""
    sizes = (1, 17, 300, 4099)
    compiled = _tensors(3, sizes, dtype)
    for lst in compiled[:2]:
        for t in lst:
            t[::7] = float("nan")
            t[1::7] = -0.0
    eager = [[t.clone() for t in lst] for lst in compiled]
    sums = kernels.run(_sign_and_mask_ops, compiled)
    want = [_sign_and_mask_ops(*(lst[i] for lst in eager)) for i in range(len(sizes))]
    for j in range(3):
        for a, b in zip(compiled[j], eager[j], strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
            assert torch.equal(torch.signbit(a), torch.signbit(b))  # -0.0 vs +0.0 too
    expected = torch.tensor([[float(w[r].sum(dtype=torch.float64)) for w in want] for r in range(3)],
                            dtype=torch.float64)
    torch.testing.assert_close(sums, expected, rtol=1e-6 if dtype == torch.float32 else 1e-13, atol=0,
                               equal_nan=True)


@needs_compiler
def test_abs_and_sign_of_special_values():
    nan, inf = float("nan"), float("inf")
    x = torch.tensor([nan, -0.0, 0.0, -inf, inf, -2.5, 3.0, 1e-40], dtype=torch.float32)

    def rule(a, b):
        ops.copy_(b, ops.sign(a))
        ops.copy_(a, ops.abs(a))

    got = [[x.clone()], [torch.zeros_like(x)]]
    assert kernels.run(rule, got) is None
    assert torch.equal(got[0][0].isnan(), x.abs().isnan())
    torch.testing.assert_close(got[0][0], x.abs(), rtol=0, atol=0, equal_nan=True)
    assert not torch.signbit(got[0][0][1])
    torch.testing.assert_close(got[1][0], torch.sign(x), rtol=0, atol=0)  # sign(NaN) = 0 in torch


def test_where_of_two_scalars_is_refused():
    with pytest.raises(TypeError, match="a or b must be a tensor"):
        ops.where(torch.ones(2, dtype=torch.bool), 1.0, 0.0)


@needs_compiler
def test_copy_into_the_gradient_is_refused():
    lists = _tensors(2, (8,), torch.float32)
    with pytest.raises(RuntimeError, match="never modify p.grad"):
        kernels.run(lambda p, g: ops.copy_(g, p), lists, readonly=(1,))
