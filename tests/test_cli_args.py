"""`steergym train`'s options are generated from each trainer's run function and config dataclasses."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Literal

import pytest

from steergym import cli_args
from steergym.cli import build_parser, trainers

TRAINERS = trainers()
CLI_LEVEL = {"help", "config", "threads", "quiet"}  # options of every trainer, not of a config


def trainer_parser(name: str) -> argparse.ArgumentParser:
    train = next(a for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions
                 if isinstance(a, argparse._SubParsersAction))
    return train.choices[name]


def main_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """{dest: action} of the generated options (aliases that set other dests left out)."""
    return {a.dest: a for a in parser._actions
            if a.dest not in CLI_LEVEL and a.default is not argparse.SUPPRESS}


@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_options_are_the_configs_fields_and_the_run_parameters(name):
    trainer = TRAINERS[name]
    actions = main_actions(trainer_parser(name))
    expected = {o.name: o.default for o in trainer.run_options()}
    for param, factory in trainer.configs.items():
        config = factory()
        fields = {f.name for f in dataclasses.fields(config)} - set(trainer.skip)
        config_options = {o.name for o in trainer.config_options(param)}
        assert config_options == fields, f"{name}: {param} options differ from its fields"
        assert not config_options & set(expected), f"{name}: {param} shares option names with the run"
        expected.update({f: getattr(config, f) for f in fields})
    assert set(actions) == set(expected)
    for dest, default in expected.items():
        if default is dataclasses.MISSING:
            assert actions[dest].required, f"{name} --{dest} should be required"
        else:
            assert actions[dest].default == default, f"{name} --{dest}"
    options = trainer.run_options() + [o for p in trainer.configs for o in trainer.config_options(p)]
    empty = [o.name for o in options if not o.help.strip()]
    assert not empty, f"{name}: options without help text (document them in the dataclass or docstring): {empty}"


def _example(option: cli_args.Option, flag: str) -> tuple[list[str], object]:
    """(command-line tokens, the value they give) for `option` (spelled `flag`), unlike its default."""
    kind, _ = cli_args._unwrap(option.type)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is bool:
        return ([f"--no-{flag[2:]}"], False) if option.default else ([flag], True)
    if origin is Literal:
        choice = next(c for c in args if c != option.default)
        return [flag, choice], choice
    if origin is not None:  # a sequence
        if args[0] is str:
            return [flag, "a/b-v0"], ["a/b-v0"]
        return [flag, "3", "5"], (3, 5)
    value = {int: 7, float: 0.375, str: "some-value"}[kind]
    return [flag, str(value)], value


@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_each_flag_sets_its_field_in_the_built_config(name):
    trainer = TRAINERS[name]
    parser = trainer_parser(name)
    flags = {}
    for action in parser._actions:  # the generated flag, not an alias that sets the same field
        flags.setdefault(action.dest, action.option_strings[0] if action.option_strings else None)
    required = [token for o in trainer.run_options() if o.default is dataclasses.MISSING
                for token in _example(o, flags[o.name])[0]]
    checked = 0
    for param in trainer.configs:
        for option in trainer.config_options(param):
            tokens, value = _example(option, flags[option.name])
            args = parser.parse_args([*required, *tokens])
            assert cli_args.given(args) == {option.name, *(o.name for o in trainer.run_options()
                                                           if o.default is dataclasses.MISSING)}
            try:
                built = trainer.arguments(args)[param]
            except ValueError:
                continue  # the config itself rejects this value (a combination it does not allow)
            assert getattr(built, option.name) == value, [*required, *tokens]
            checked += 1
    assert checked >= 0.8 * sum(len(trainer.config_options(p)) for p in trainer.configs)


def test_old_spellings_and_precedence():
    calql = trainer_parser("calql")
    args = calql.parse_args(["--dataset", "d", "--out", "o", "--hidden", "16", "16", "--no-normalize-obs",
                             "--config", '{"batch_size": 8, "cql_alpha": 2.0}', "--batch-size", "16"])
    config = TRAINERS["calql"].arguments(args)["config"]
    assert config.actor_hidden == config.critic_hidden == (16, 16) and not config.normalize_observations
    assert (config.batch_size, config.cql_alpha, config.calibrated) == (16, 2.0, True)  # flags win over --config
    assert config.log_every == 100  # 1% of the 10,000 offline steps unless given
    cql = TRAINERS["cql"].arguments(trainer_parser("cql").parse_args(["--dataset", "d", "--out", "o"]))
    assert not cql["config"].calibrated
    ogpo = trainer_parser("ogpo")
    config = TRAINERS["ogpo"].arguments(ogpo.parse_args(
        ["--out", "o", "--hidden", "32", "--no-success-bc", "--chi2", "--q-vr"]))["config"]
    assert config.critic_hidden == (32,) and not config.success_buffer_bc and config.q_variance_reduction
    assert config.chi2 and not config.conservative_advantages  # --chi2 turns conservative advantages off
    steering = TRAINERS["residual"].arguments(trainer_parser("residual").parse_args(
        ["--out", "o", "--scale", "0.2", "--lr", "1e-3", "--gradient-steps", "2"]))
    assert (steering["config"].residual_scale, steering["config"].learning_rate) == (0.2, 1e-3)
    assert steering["method"] == "residual" and steering["policy"] == "widowx-carrot-diffusion"
    bc = TRAINERS["bc"].arguments(trainer_parser("bc").parse_args(
        ["--dataset", "a", "--dataset", "b", "--out", "o", "--policy", "flow", "--hidden-dim", "16", "--steps", "5"]))
    assert bc["dataset"] == ["a", "b"] and bc["policy"] == "flow"
    assert bc["policy_config"].hidden_dim == 16 and bc["config"].steps == 5
    ptr = TRAINERS["ptr"].arguments(trainer_parser("ptr").parse_args(
        ["--prior", "a", "--prior", "b", "--target", "c", "--out", "o", "--hidden", "16"]))
    assert (ptr["prior_ids"], ptr["target_id"], ptr["calql"].critic_hidden) == (["a", "b"], "c", (16,))
    assert ptr["calql"].cql_alpha == 10.0 and ptr["calql"].log_every == 300  # PTR's defaults, 1% of 30k steps
    with pytest.raises(ValueError, match="unknown fields"):
        TRAINERS["vgps"].arguments(trainer_parser("vgps").parse_args(
            ["--dataset", "a", "--out", "o", "--config", '{"nope": 1}']))


def test_help_comes_from_comments_and_docstrings():
    from steergym.algorithms.calql import CalQLConfig
    from steergym.policies.config import PolicyConfig

    helps = cli_args.field_help(CalQLConfig)
    assert helps["cql_alpha"].startswith("code `cql_min_q_weight`")
    assert "(obs - mean)" in helps["normalize_observations"]  # a continuation line
    assert helps["latent_dim"]  # a field of the base class
    assert cli_args.field_help(PolicyConfig)["num_blocks"].startswith("Residual MLP")  # the block above
    text = trainer_parser("calql").format_help()
    assert "--pretrain-steps" in text and "offline gradient steps" in text
