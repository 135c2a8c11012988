"""Benchmarking policies on registered tasks: evaluation with confidence intervals and videos."""

from steergym.bench.evaluate import POLICY_NAMES, EvalResult, evaluate, make_env, wilson_interval

__all__ = ["POLICY_NAMES", "EvalResult", "evaluate", "make_env", "wilson_interval"]
