"""The test registry: every optimizer once, with sample configurations, problems it must solve and bad inputs.

One table drives the generic tests in ``test_every_optimizer.py`` (after torch's OptimizerInfo and optax's
``_OPTIMIZERS_UNDER_TEST``). Adding an optimizer to :data:`optimlab.OPTIMIZERS` without an entry here fails
``test_every_registered_optimizer_is_under_test``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

import optimlab


@dataclass
class OptimInfo:
    name: str  # registry name
    configs: list[dict[str, Any]]  # sample kwargs (each runs every generic test)
    quadratic: tuple[dict[str, Any], int]  # kwargs, steps to reach the optimum of a 2-D ill-conditioned quadratic
    rosenbrock: tuple[dict[str, Any], int]  # same on Rosenbrock from (-1.5, 2)
    errors: list[tuple[dict[str, Any], type[Exception], str]] = field(default_factory=list)
    matrix_only: bool = False  # the class itself takes matrices only (Muon); create_optimizer takes anything
    first_step_moves: bool = True  # False: a parameter's first step only builds a preconditioner (SOAP)

    def tensor(self, n: int) -> torch.Tensor:
        """A small parameter the class itself accepts: a vector, or a square matrix for a matrix-only class."""
        return torch.zeros((n, n) if self.matrix_only else (n,), requires_grad=True)

    @property
    def cls(self) -> type:
        return optimlab.OPTIMIZERS[self.name].cls

    def make(self, params: Any, **kwargs: Any) -> Any:
        return optimlab.create_optimizer(self.name, params, **kwargs)


ADAM_ERRORS = [
    (dict(lr=-1e-3), ValueError, r"Invalid lr: -0\.001; expected lr >= 0"),
    (dict(betas=(1.0, 0.999)), ValueError, r"Invalid betas\[0\]: 1\.0; expected \[0, 1\)"),
    (dict(betas=(0.9, -0.1)), ValueError, r"Invalid betas\[1\]"),
    (dict(betas=0.9), TypeError, r"Invalid betas"),
    (dict(eps=0.0), ValueError, r"Invalid eps: 0\.0; expected eps > 0"),
    (dict(weight_decay=-0.1), ValueError, r"Invalid weight_decay: -0\.1; expected weight_decay >= 0"),
    (dict(lr="fast"), TypeError, r"Invalid lr"),
    (dict(bogus=1), TypeError, r"bogus"),
]
SGD_ERRORS = [
    (dict(lr=-0.1), ValueError, r"Invalid lr"),
    (dict(momentum=-0.5), ValueError, r"Invalid momentum"),
    (dict(weight_decay=-1.0), ValueError, r"Invalid weight_decay"),
    (dict(nesterov=True, momentum=0.0), ValueError, r"Invalid nesterov"),
    (dict(nesterov=True, momentum=0.9, dampening=0.1), ValueError, r"Invalid nesterov"),
    (dict(dampening=1.5), ValueError, r"Invalid dampening"),
    (dict(momentm=0.9), TypeError, r"momentm"),
]
FAST = ({"lr": 0.02}, 2000)

DB: list[OptimInfo] = [
    OptimInfo("sgd", [dict(lr=0.05), dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01),
                      dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True),
                      dict(lr=0.05, momentum=0.9, weight_decay=0.01, cautious=True)],
              ({"lr": 0.05}, 2000), ({"lr": 1.5e-3}, 8000), SGD_ERRORS),
    OptimInfo("sgdm", [dict(lr=0.05)], ({"lr": 0.01}, 2000), ({"lr": 1e-3}, 3000), SGD_ERRORS),
    OptimInfo("nesterov", [dict(lr=0.05)], ({"lr": 0.01}, 2000), ({"lr": 1e-3}, 3000), SGD_ERRORS),
    OptimInfo("sgdw", [dict(lr=0.05, weight_decay=0.01), dict(lr=0.05, weight_decay=0.01, decay_scale="schedule"),
                       dict(lr=0.05, momentum=0.0, weight_decay=0.1, nesterov=False)],
              ({"lr": 0.01}, 2000), ({"lr": 1e-3}, 3000),
              SGD_ERRORS + [(dict(decay_scale="epoch"), ValueError, r"Invalid decay_scale: 'epoch'")]),
    OptimInfo("adagrad", [dict(lr=0.1), dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1)],
              ({"lr": 0.5}, 2000), ({"lr": 0.5}, 10000),
              [(dict(lr=-1.0), ValueError, r"Invalid lr"), (dict(lr_decay=-1.0), ValueError, r"Invalid lr_decay"),
               (dict(initial_accumulator_value=-1.0), ValueError, r"Invalid initial_accumulator_value"),
               (dict(eps=-1.0), ValueError, r"Invalid eps")]),
    OptimInfo("rmsprop", [dict(lr=0.01), dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.01)],
              ({"lr": 0.01}, 2000), ({"lr": 3e-3}, 5000),
              [(dict(lr=-1.0), ValueError, r"Invalid lr"), (dict(alpha=1.5), ValueError, r"Invalid alpha"),
               (dict(momentum=-1.0), ValueError, r"Invalid momentum"), (dict(eps=0.0), ValueError, r"Invalid eps")]),
    OptimInfo("adam", [dict(lr=0.01), dict(lr=0.01, amsgrad=True, weight_decay=0.01),
                       dict(lr=0.01, amsgrad=True, amsgrad_max="v_hat", maximize=True),
                       dict(lr=0.01, weight_decay=0.01, decoupled_weight_decay=True, decay_scale="schedule")],
              FAST, ({"lr": 3.0}, 3000),
              ADAM_ERRORS + [(dict(amsgrad_max="m"), ValueError, r"Invalid amsgrad_max: 'm'")]),
    OptimInfo("amsgrad", [dict(lr=0.01)], FAST, ({"lr": 1.0}, 3000), ADAM_ERRORS),
    OptimInfo("adamw", [dict(lr=0.01), dict(lr=0.01, decay_scale="schedule", amsgrad=True),
                        dict(lr=0.01, cautious=True, cautious_weight_decay=True, maximize=True)],
              ({"lr": 0.02, "weight_decay": 0.0}, 2000), ({"lr": 3.0, "weight_decay": 0.0}, 3000), ADAM_ERRORS),
    OptimInfo("nadam", [dict(lr=0.01), dict(lr=0.01, weight_decay=0.01, decoupled_weight_decay=True),
                        dict(lr=0.01, cautious=True)],
              FAST, ({"lr": 0.01}, 3000),
              ADAM_ERRORS + [(dict(momentum_decay=-1.0), ValueError, r"Invalid momentum_decay")]),
    OptimInfo("radam", [dict(lr=0.01), dict(lr=0.01, weight_decay=0.01, decoupled_weight_decay=True),
                        dict(lr=0.01, rectify_threshold=4.0, degenerated_to_sgd=False)],
              FAST, ({"lr": 0.01}, 10000),
              ADAM_ERRORS + [(dict(rectify_threshold=3.0), ValueError, r"Invalid rectify_threshold")]),
    OptimInfo("adabound", [dict(lr=0.01), dict(lr=0.01, weight_decay=0.01, decoupled_weight_decay=True),
                           dict(lr=0.01, amsbound=True)],
              ({"lr": 0.02, "final_lr": 0.01}, 2000), ({"lr": 1.0, "final_lr": 0.01}, 3000),
              ADAM_ERRORS + [(dict(final_lr=-0.1), ValueError, r"Invalid final_lr"),
                             (dict(gamma=0.0), ValueError, r"Invalid gamma")]),
    OptimInfo("amsbound", [dict(lr=0.01)], ({"lr": 0.02, "final_lr": 0.01}, 2000),
              ({"lr": 1.0, "final_lr": 0.01}, 3000), ADAM_ERRORS),
    OptimInfo("lars", [dict(lr=1.0), dict(lr=1.0, weight_decay=0.01, nesterov=True),
                       dict(lr=1.0, trust_denominator="norm", weight_decay=0.01),
                       dict(lr=0.05, layer_adaptation=False, momentum=0.0)],
              ({"lr": 0.1, "trust_coefficient": 0.01}, 3000), ({"lr": 0.1, "trust_coefficient": 0.01}, 3000),
              [(dict(lr=-1.0), ValueError, r"Invalid lr"), (dict(momentum=1.0), ValueError, r"Invalid momentum"),
               (dict(trust_coefficient=0.0), ValueError, r"Invalid trust_coefficient"),
               (dict(trust_denominator="l1"), ValueError, r"Invalid trust_denominator"),
               (dict(weight_decay=-1.0), ValueError, r"Invalid weight_decay"),
               (dict(nesterov=True, momentum=0.0), ValueError, r"Invalid nesterov")]),
    OptimInfo("lamb", [dict(lr=0.01), dict(lr=0.01, weight_decay=0.01, bias_correction=False),
                       dict(lr=0.01, max_weight_norm=10.0, maximize=True)],
              ({"lr": 0.01}, 2000), ({"lr": 3e-3}, 10000),
              ADAM_ERRORS + [(dict(max_weight_norm=0.0), ValueError, r"Invalid max_weight_norm")]),
    OptimInfo("swats", [dict(lr=0.01), dict(lr=0.01, weight_decay=0.01, nesterov=True, switch_tol=1e-3)],
              FAST, ({"lr": 3.0}, 3000),
              ADAM_ERRORS + [(dict(switch_tol=-1.0), ValueError, r"Invalid switch_tol")]),
]

# -- the matrix optimizers (Muon, SOAP, Shampoo) -----------------------------------------------------------------------
# Muon runs Newton-Schulz in float64 here so the stacked path can be held to the plain loop at 1e-12 (in bfloat16 the
# two agree to the last bit of bfloat16: tests/test_muon.py). Through create_optimizer a parameter list is split:
# matrices to Muon, the rest to AdamW (whose lr is adamw_lr); quadratic/Rosenbrock have a vector only, i.e. AdamW.
MUON_F64 = dict(lr=0.02, ns_dtype=torch.float64)
DB += [
    OptimInfo("muon", [MUON_F64,
                       dict(MUON_F64, nesterov=False, weight_decay=0.1, adjust_lr_fn="match_rms_adamw",
                            momentum_form="sum", adamw_lr=0.01),
                       dict(MUON_F64, ns_coefficients="polar_express", ns_steps=6, maximize=True, momentum=0.9)],
              ({"adamw_lr": 0.02, "weight_decay": 0.0}, 2000), ({"adamw_lr": 0.01, "weight_decay": 0.0}, 3000),
              [(dict(lr=-1.0), ValueError, r"Invalid lr"),
               (dict(momentum=1.0), ValueError, r"Invalid momentum: 1\.0; expected \[0, 1\)"),
               (dict(weight_decay=-0.1), ValueError, r"Invalid weight_decay"),
               (dict(eps=0.0), ValueError, r"Invalid eps"),
               (dict(ns_steps=0), ValueError, r"Invalid ns_steps: 0"),
               (dict(ns_coefficients=(1.0, 2.0)), TypeError, r"Invalid ns_coefficients"),
               (dict(adjust_lr_fn="rms"), ValueError, r"Invalid adjust_lr_fn: 'rms'"),
               (dict(ns_dtype=torch.int32), TypeError, r"Invalid ns_dtype"),
               (dict(momentum_form="heavy"), ValueError, r"Invalid momentum_form: 'heavy'"),
               (dict(nesterov=1), TypeError, r"Invalid nesterov"),
               (dict(adam_betas=(1.0, 0.9)), ValueError, r"Invalid adam_betas\[0\]"),
               (dict(adam_eps=0.0), ValueError, r"Invalid adam_eps"),
               (dict(bogus=1), TypeError, r"bogus")],
              matrix_only=True),
    OptimInfo("soap", [dict(lr=0.01, precondition_frequency=2),
                       dict(lr=0.01, precondition_frequency=3, merge_dims=True, precondition_1d=True,
                            normalize_grads=True, weight_decay=0.0),
                       dict(lr=0.01, max_precond_dim=5, betas=(0.9, 0.99), shampoo_beta=0.9, maximize=True,
                            correct_bias=False)],
              ({"lr": 0.02, "weight_decay": 0.0}, 2000), ({"lr": 0.01, "weight_decay": 0.0}, 3000),
              ADAM_ERRORS + [(dict(shampoo_beta=1.0), ValueError, r"Invalid shampoo_beta: 1\.0"),
                             (dict(precondition_frequency=0), ValueError, r"Invalid precondition_frequency: 0"),
                             (dict(max_precond_dim=2.5), ValueError, r"Invalid max_precond_dim"),
                             (dict(merge_dims=1), TypeError, r"Invalid merge_dims"),
                             (dict(data_format="nhwc"), ValueError, r"Invalid data_format: 'nhwc'")],
              first_step_moves=False),
    OptimInfo("shampoo", [dict(lr=0.01, precondition_frequency=2),
                          dict(lr=0.01, precondition_frequency=2, max_preconditioner_dim=4, weight_decay=0.01,
                               weight_decay_type="l2", grafting="rmsprop", maximize=True),
                          dict(lr=0.01, precondition_frequency=3, start_preconditioning_step=3, grafting=None,
                               betas=(0.0, 1.0), epsilon=0.1)],
              ({"lr": 0.02, "precondition_frequency": 10}, 2000), ({"lr": 0.01, "precondition_frequency": 10}, 3000),
              [(dict(lr=-1.0), ValueError, r"Invalid lr"),
               (dict(betas=(1.0, 0.9)), ValueError, r"Invalid betas\[0\]: 1\.0"),
               (dict(betas=(0.9, 1.5)), ValueError, r"Invalid betas\[1\]: 1\.5; expected \[0, 1\]"),
               (dict(betas=0.9), TypeError, r"Invalid betas"),
               (dict(epsilon=0.0), ValueError, r"Invalid epsilon"),
               (dict(weight_decay=-1.0), ValueError, r"Invalid weight_decay"),
               (dict(weight_decay_type="adamw"), ValueError, r"Invalid weight_decay_type: 'adamw'"),
               (dict(max_preconditioner_dim=0), ValueError, r"Invalid max_preconditioner_dim: 0"),
               (dict(precondition_frequency=0), ValueError, r"Invalid precondition_frequency: 0"),
               (dict(start_preconditioning_step=-2), ValueError, r"Invalid start_preconditioning_step: -2"),
               (dict(grafting="lamb"), ValueError, r"Invalid grafting: 'lamb'"),
               (dict(grafting_beta2=1.0), ValueError, r"Invalid grafting_beta2"),
               (dict(grafting_epsilon=0.0), ValueError, r"Invalid grafting_epsilon"),
               (dict(inverse_exponent_override={2: -1.0}), TypeError, r"Invalid inverse_exponent_override"),
               (dict(factor_dtype=torch.float16), TypeError, r"Invalid factor_dtype"),
               (dict(bogus=1), TypeError, r"bogus")]),
]

# -- PSGD Kron (kron-torch 0.3.3's rule; tests/test_kron.py holds it to kron-torch) ----------------------------------
KRON_ERRORS = [
    (dict(lr=-1.0), ValueError, r"Invalid lr"),
    (dict(b1=1.0), ValueError, r"Invalid b1: 1\.0"),
    (dict(weight_decay=-0.1), ValueError, r"Invalid weight_decay"),
    (dict(preconditioner_update_probability=0.0), ValueError, r"Invalid preconditioner_update_probability: 0\.0"),
    (dict(preconditioner_update_probability="often"), TypeError, r"Invalid preconditioner_update_probability"),
    (dict(max_size_triangular=0), ValueError, r"Invalid max_size_triangular: 0"),
    (dict(min_ndim_triangular=1.5), TypeError, r"Invalid min_ndim_triangular"),
    (dict(memory_save_mode="half_diag"), ValueError, r"Invalid memory_save_mode: 'half_diag'"),
    (dict(precond_update_mode="sometimes"), ValueError, r"Invalid precond_update_mode: 'sometimes'"),
    (dict(merge_dims=1), TypeError, r"Invalid merge_dims"),
    (dict(precond_lr=-0.1), ValueError, r"Invalid precond_lr"),
    (dict(precond_init_scale=0.0), ValueError, r"Invalid precond_init_scale: 0\.0"),
    (dict(precond_dtype=torch.int32), TypeError, r"Invalid precond_dtype"),
    (dict(mu_dtype="bf16"), TypeError, r"Invalid mu_dtype"),
    (dict(seed=-1), ValueError, r"Invalid seed: -1"),
    (dict(bogus=1), TypeError, r"bogus"),
]
DB += [
    OptimInfo("kron", [dict(lr=0.01, preconditioner_update_probability=1.0, precond_dtype=torch.float64),
                       dict(lr=0.01, weight_decay=0.01, memory_save_mode="one_diag", max_size_triangular=4,
                            momentum_into_precond_update=False, precond_init_scale=None,
                            precond_dtype=torch.float64, maximize=True),
                       dict(lr=0.01, b1=0.5, preconditioner_update_probability=0.5, memory_save_mode="all_diag",
                            precond_update_mode="random", merge_dims=False, seed=3, precond_dtype=torch.float64)],
              ({"lr": 0.01}, 2000), ({"lr": 3e-3}, 6000), KRON_ERRORS),
]
BY_NAME = {info.name: info for info in DB}
CASES = [(info, cfg) for info in DB for cfg in info.configs]


def case_id(case: tuple[OptimInfo, dict[str, Any]]) -> str:
    info, cfg = case
    return info.name + "-" + ",".join(f"{k}={v}" for k, v in cfg.items() if k != "lr")


# -- after Adam (element-wise, and the other torch classes) ------------------------------------------------------------
def _beta_errors(name: str = "betas") -> list[tuple[dict[str, Any], type[Exception], str]]:
    return [(dict(betas=(1.0, 0.999)), ValueError, rf"Invalid {name}\[0\]: 1\.0; expected \[0, 1\)"),
            (dict(betas=(0.9, -0.1)), ValueError, rf"Invalid {name}\[1\]"),
            (dict(betas=0.9), TypeError, rf"Invalid {name}")]


COMMON_ERRORS = [
    (dict(lr=-1e-3), ValueError, r"Invalid lr: -0\.001; expected lr >= 0"),
    (dict(lr="fast"), TypeError, r"Invalid lr"),
    (dict(bogus=1), TypeError, r"bogus"),
]
EPS_WD_ERRORS = [
    (dict(eps=0.0), ValueError, r"Invalid eps: 0\.0; expected eps > 0"),
    (dict(weight_decay=-0.1), ValueError, r"Invalid weight_decay: -0\.1; expected weight_decay >= 0"),
]
SCHEDULE_FREE_ERRORS = [
    (dict(warmup_steps=-1), ValueError, r"Invalid warmup_steps: -1; expected an int >= 0"),
    (dict(warmup_steps=2.5), ValueError, r"Invalid warmup_steps"),
    (dict(r=-1.0), ValueError, r"Invalid r: -1\.0; expected r >= 0"),
    (dict(weight_lr_power=-2.0), ValueError, r"Invalid weight_lr_power"),
]

DB += [
    OptimInfo("adamax", [dict(lr=0.01), dict(lr=0.01, weight_decay=0.01, betas=(0.5, 0.9), maximize=True)],
              ({"lr": 0.05}, 2000), ({"lr": 0.02}, 5000), COMMON_ERRORS + EPS_WD_ERRORS + _beta_errors()),
    OptimInfo("adadelta", [dict(lr=1.0), dict(lr=1.0, rho=0.5, eps=1e-4, weight_decay=0.01)],
              ({"lr": 1.0, "eps": 1e-2}, 2000), ({"lr": 0.05, "eps": 1e-6, "rho": 0.5}, 8000),
              COMMON_ERRORS + EPS_WD_ERRORS + [(dict(rho=1.5), ValueError, r"Invalid rho: 1\.5; expected \[0, 1\]")]),
    OptimInfo("asgd", [dict(lr=0.01), dict(lr=0.01, t0=3.0, lambd=1e-2, alpha=0.5, weight_decay=0.01)],
              ({"lr": 0.05, "t0": 100.0}, 2000), ({"lr": 1.5e-3, "t0": 1000.0, "lambd": 0.0}, 8000),
              COMMON_ERRORS + [(dict(weight_decay=-0.1), ValueError, r"Invalid weight_decay"),
                               (dict(lambd=-1.0), ValueError, r"Invalid lambd: -1\.0; expected lambd >= 0"),
                               (dict(alpha=-0.5), ValueError, r"Invalid alpha"),
                               (dict(t0=-1.0), ValueError, r"Invalid t0")]),
    OptimInfo("rprop", [dict(lr=0.01), dict(lr=0.01, etas=(0.3, 1.5), step_sizes=(1e-4, 0.5), maximize=True)],
              ({"lr": 0.01}, 2000), ({"lr": 0.01, "step_sizes": (1e-6, 0.1)}, 3000),
              COMMON_ERRORS + [(dict(etas=(0.5, 0.9)), ValueError, r"Invalid etas: \(0\.5, 0\.9\); expected 0 < "),
                               (dict(etas=(1.5, 2.0)), ValueError, r"Invalid etas"),
                               (dict(etas=1.2), TypeError, r"Invalid etas"),
                               (dict(step_sizes=(1.0, 0.1)), ValueError, r"Invalid step_sizes"),
                               (dict(step_sizes=(-1.0, 0.1)), ValueError, r"Invalid step_sizes\[0\]")]),
    OptimInfo("adafactor", [dict(lr=0.01), dict(lr=0.01, weight_decay=0.01, beta2_decay=-0.5, eps=(1e-30, 1e-2),
                                                d=2.0, maximize=True)],
              ({"lr": 0.1}, 2000), ({"lr": 0.05}, 10000),
              COMMON_ERRORS + [(dict(weight_decay=-0.1), ValueError, r"Invalid weight_decay"),
                               (dict(beta2_decay=0.5), ValueError, r"Invalid beta2_decay: 0\.5; expected"),
                               (dict(eps=1e-3), TypeError, r"Invalid eps: 0\.001; expected a pair"),
                               (dict(eps=(-1.0, 1e-3)), ValueError, r"Invalid eps\[0\]"),
                               (dict(eps=(None, -1e-3)), ValueError, r"Invalid eps\[1\]"),
                               (dict(d=0.5), ValueError, r"Invalid d: 0\.5; expected \[1, inf\]")]),
    OptimInfo("lion", [dict(lr=0.01), dict(lr=0.01, weight_decay=0.1, decay_scale="schedule", betas=(0.95, 0.98)),
                       dict(lr=0.01, weight_decay=0.1, cautious=True, cautious_weight_decay=True)],
              ({"lr": 3e-3}, 3000), ({"lr": 1e-3}, 6000),
              COMMON_ERRORS + _beta_errors() + [
                  (dict(weight_decay=-0.1), ValueError, r"Invalid weight_decay"),
                  (dict(decay_scale="epoch"), ValueError, r"Invalid decay_scale: 'epoch'")]),
    OptimInfo("schedulefree-sgd", [dict(lr=0.05), dict(lr=0.05, momentum=0.5, weight_decay=0.01, warmup_steps=3,
                                                       r=1.0, weight_lr_power=1.0)],
              ({"lr": 0.1}, 2000), ({"lr": 2e-3, "momentum": 0.5}, 12000),
              COMMON_ERRORS + SCHEDULE_FREE_ERRORS + [
                  (dict(momentum=1.0), ValueError, r"Invalid momentum: 1\.0; expected \(0, 1\)"),
                  (dict(momentum=0.0), ValueError, r"Invalid momentum"),
                  (dict(weight_decay=-0.1), ValueError, r"Invalid weight_decay")]),
    OptimInfo("schedulefree-adamw", [dict(lr=0.01), dict(lr=0.01, weight_decay=0.01, warmup_steps=3,
                                                         bias_correction="lr"),
                                     dict(lr=0.01, inner_momentum=0.9, r=0.5, maximize=True)],
              ({"lr": 0.05}, 2000), ({"lr": 0.01}, 8000),
              COMMON_ERRORS + EPS_WD_ERRORS + _beta_errors() + SCHEDULE_FREE_ERRORS + [
                  (dict(betas=(0.0, 0.999)), ValueError, r"Invalid betas\[0\]: 0\.0"),
                  (dict(inner_momentum=1.0), ValueError, r"Invalid inner_momentum"),
                  (dict(bias_correction="m"), ValueError, r"Invalid bias_correction: 'm'")]),
    OptimInfo("ademamix", [dict(lr=0.01), dict(lr=0.01, alpha=5.0, beta3_warmup=5, alpha_warmup=5, weight_decay=0.01),
                           dict(lr=0.01, betas=(0.0, 0.999, 0.999), alpha_warmup=4, warmup_from_zero=True)],
              ({"lr": 0.02, "betas": (0.9, 0.999, 0.99)}, 3000), ({"lr": 0.01, "betas": (0.9, 0.999, 0.99)}, 4000),
              COMMON_ERRORS + EPS_WD_ERRORS + [
                  (dict(betas=(0.9, 0.999)), TypeError, r"Invalid betas: \(0\.9, 0\.999\); expected a triple"),
                  (dict(betas=(1.0, 0.999, 0.9999)), ValueError, r"Invalid betas\[0\]: 1\.0"),
                  (dict(betas=(0.9, 0.999, 1.0)), ValueError, r"Invalid betas\[2\]: 1\.0"),
                  (dict(alpha=-1.0), ValueError, r"Invalid alpha"),
                  (dict(alpha_warmup=0), ValueError, r"Invalid alpha_warmup: 0; expected None or an int >= 1"),
                  (dict(beta3_warmup=2.5), ValueError, r"Invalid beta3_warmup")]),
    OptimInfo("mars", [dict(lr=0.01), dict(lr=0.01, weight_decay=0.01, amsgrad=True, optimize_1d=True),
                       dict(lr=0.01, mars_type="mars-lion", weight_decay=0.01, maximize=True)],
              ({"lr": 0.02, "optimize_1d": True}, 3000), ({"lr": 0.01, "optimize_1d": True}, 4000),
              COMMON_ERRORS + EPS_WD_ERRORS + _beta_errors() + [
                  (dict(gamma=-0.1), ValueError, r"Invalid gamma"),
                  (dict(mars_type="mars-shampoo"), ValueError, r"Invalid mars_type: 'mars-shampoo'"),
                  (dict(lr_1d=-1.0), ValueError, r"Invalid lr_1d"),
                  (dict(betas_1d=(0.9, 1.0)), ValueError, r"Invalid betas_1d\[1\]"),
                  (dict(weight_decay_1d=-0.1), ValueError, r"Invalid weight_decay_1d"),
                  (dict(amsgrad=1), TypeError, r"Invalid amsgrad")]),
    OptimInfo("prodigy", [dict(lr=1.0), dict(lr=1.0, weight_decay=0.01, decouple=False, use_bias_correction=True,
                                             safeguard_warmup=True, betas=(0.0, 0.99)),
                          dict(lr=1.0, weight_decay=0.01, growth_rate=1.5, d_coef=2.0, beta3=0.9, maximize=True)],
              ({"lr": 1.0}, 2000), ({"lr": 1.0, "d_coef": 0.2}, 4000),
              COMMON_ERRORS + EPS_WD_ERRORS + _beta_errors() + [
                  (dict(beta3=1.0), ValueError, r"Invalid beta3"),
                  (dict(d0=0.0), ValueError, r"Invalid d0: 0\.0; expected d0 > 0"),
                  (dict(d_coef=-1.0), ValueError, r"Invalid d_coef"),
                  (dict(growth_rate=0.5), ValueError, r"Invalid growth_rate"),
                  (dict(decouple=1), TypeError, r"Invalid decouple")]),
    OptimInfo("adopt", [dict(lr=0.01), dict(lr=0.01, weight_decay=0.01, decouple=True, clip_lambda=None),
                        dict(lr=0.01, weight_decay=0.01, maximize=True), dict(lr=0.01, cautious=True)],
              ({"lr": 0.02}, 3000), ({"lr": 0.01, "betas": (0.9, 0.99)}, 4000),
              COMMON_ERRORS + EPS_WD_ERRORS + _beta_errors() + [
                  (dict(decouple="yes"), TypeError, r"Invalid decouple")]),
]
# Issue 26. NorMuon: float64 Newton-Schulz as for Muon; the configs cover dion's defaults, the authors' settings (ema
# momentum, Nesterov, quintic, sqrt(max(1, m/n))) and the speedrun's stat axis.
DB += [
    OptimInfo("normuon", [dict(lr=0.02, ns_dtype=torch.float64),
                          dict(lr=0.02, ns_dtype=torch.float64, weight_decay=0.0, nesterov=True, momentum_form="ema",
                               ns_coefficients="quintic", adjust_lr_fn="original", beta2=0.9, adamw_lr=0.01),
                          dict(lr=0.02, ns_dtype=torch.float64, stat_axis="longer", adjust_lr_fn="match_rms_adamw",
                               maximize=True, beta2=0.0)],
              ({"adamw_lr": 0.02, "weight_decay": 0.0}, 2000), ({"adamw_lr": 0.01, "weight_decay": 0.0}, 3000),
              [(dict(lr=-1.0), ValueError, r"Invalid lr"),
               (dict(momentum=1.0), ValueError, r"Invalid momentum"),
               (dict(beta2=1.5), ValueError, r"Invalid beta2: 1\.5; expected \[0, 1\]"),
               (dict(beta2=-0.1), ValueError, r"Invalid beta2"),
               (dict(stat_axis="cols"), ValueError, r"Invalid stat_axis: 'cols'"),
               (dict(adjust_lr_fn="rms_norm"), ValueError, r"Invalid adjust_lr_fn: 'rms_norm'"),
               (dict(eps=0.0), ValueError, r"Invalid eps"),
               (dict(weight_decay=-0.1), ValueError, r"Invalid weight_decay")],
              matrix_only=True),
]
BY_NAME = {info.name: info for info in DB}
CASES = [(info, cfg) for info in DB for cfg in info.configs]
#: Optimizers whose param groups share one estimate (Prodigy's D), so groups with different lrs are refused.
SHARED_GROUPS = {"prodigy"}
#: Optimizers whose first step only initialises state (ADOPT: the second moment; SOAP: its preconditioner), so the
#: parameters move from step 2.
FIRST_STEP_STILL = {"adopt"} | {info.name for info in DB if not info.first_step_moves}
#: Optimizers whose step needs whole matrices (eigenbases, Newton-Schulz): not element-wise.
MATRIX_OPTIMIZERS = {"muon", "soap", "shampoo", "normuon", "kron"}
#: Optimizers that refuse float16 parameters (Prodigy: its d-scaled moments, d0^2 = 1e-12, underflow in float16).
NO_FLOAT16 = {"prodigy"}
