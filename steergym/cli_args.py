"""Command-line options generated from config dataclasses and run functions (a small tyro).

    options = dataclass_options(CalQLConfig())     # one per field: type, default, help from its comment
    options += function_options(run_calql)         # one per parameter: type, default, help from `Args:`
    add_options(parser, options, aliases={"--lr": "learning_rate"})
    args = parser.parse_args(argv)
    given(args)                                    # the dests set on the command line

A field's help is its trailing `# ...` comment (with any `#   ...` continuation lines below it), else
its attribute docstring, else the comment block above it (shared by the fields listed under one
block). A parameter's help is its entry under `Args:` in the function's docstring.

Types: bool -> --x/--no-x; int, float, str; Literal[...] -> choices; X | None -> X (default None);
a tuple/list of numbers -> nargs="+"; a sequence of str -> a repeatable option (--dataset A --dataset B).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import io
import os
import re
import textwrap
import tokenize
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

GIVEN = "_given_options"  # the Namespace attribute listing the dests set on the command line
SKIP = ("progress",)  # run-function parameters the command line sets otherwise (--quiet)


@dataclasses.dataclass(frozen=True)
class Option:
    """One command-line option: `name` (the dest and, dashed, the flag), its type, default and help."""

    name: str
    type: Any
    default: Any  # dataclasses.MISSING: required
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


# ------------------------------------------------------------------------------ reading the source
@functools.cache
def field_help(cls: type) -> dict[str, str]:
    """{field: help text} of a dataclass and its dataclass bases, from comments and attribute docstrings."""
    helps: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass) and klass is not object:
            helps.update(_class_comments(klass))
    return helps


def _class_comments(klass: type) -> dict[str, str]:
    try:
        source = textwrap.dedent(inspect.getsource(klass))
    except (OSError, TypeError):
        return {}
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    lines = source.splitlines()
    only_comment = {n for n in comments if lines[n - 1].lstrip().startswith("#")}
    body = ast.parse(source).body[0].body
    helps: dict[str, str] = {}
    block = ""  # the comment block above the current run of fields
    for i, node in enumerate(body):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above, n = [], node.lineno - 1
        while n in only_comment:
            above.insert(0, comments[n])
            n -= 1
        if above:
            block = " ".join(text for text in above if not text.startswith("---"))
        elif n >= 1 and lines[n - 1].strip() == "":
            block = ""
        end = node.end_lineno
        text = comments.get(end, "") if end not in only_comment else ""
        if text:
            n = end + 1
            while n in only_comment and lines[n - 1].lstrip().startswith("#  "):  # indented continuation
                text += " " + comments[n]
                n += 1
        nxt = body[i + 1] if i + 1 < len(body) else None
        if not text and isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant) \
                and isinstance(nxt.value.value, str):
            text = " ".join(nxt.value.value.split())
        helps[node.target.id] = text or block
    return helps


@functools.cache
def docstring_args(fn: Callable) -> dict[str, str]:
    """{parameter: text} of the `Args:` section of a Google-style docstring."""
    doc = inspect.getdoc(fn) or ""
    match = re.search(r"^Args:\n((?:[ \t]+.*\n?|\n)+)", doc, re.MULTILINE)
    if not match:
        return {}
    helps: dict[str, str] = {}
    name = None
    for line in textwrap.dedent(match.group(1)).splitlines():
        entry = re.match(r"^(\w+)(?: \([^)]*\))?:\s*(.*)", line)
        if entry:
            name, text = entry.groups()
            helps[name] = text
        elif name and line.strip():
            helps[name] += " " + line.strip()
    return helps


# ------------------------------------------------------------------------------ options
def dataclass_options(config: Any, skip: Sequence[str] = ()) -> list[Option]:
    """The options of a config dataclass instance (its values are the defaults) or class."""
    cls = config if isinstance(config, type) else type(config)
    hints, helps = typing.get_type_hints(cls), field_help(cls)
    options = []
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        if not isinstance(config, type):
            default = getattr(config, f.name)
        elif f.default is not dataclasses.MISSING:
            default = f.default
        else:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING
        options.append(Option(f.name, hints[f.name], default, helps.get(f.name, "")))
    return options


def function_options(fn: Callable, skip: Sequence[str] = ()) -> list[Option]:
    """The options of a function's parameters (all but `skip` and `SKIP`)."""
    hints, helps = typing.get_type_hints(fn), docstring_args(fn)
    options = []
    for name, param in inspect.signature(fn).parameters.items():
        if name in skip or name in SKIP or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        default = dataclasses.MISSING if param.default is param.empty else param.default
        options.append(Option(name, hints.get(name, str), default, helps.get(name, "")))
    return options


def add_options(parser: argparse.ArgumentParser | Any, options: Sequence[Option], *,
                names: dict[str, str] | None = None, aliases: dict[str, str | tuple[str, ...]] | None = None) -> None:
    """Add `options` to `parser` (or an argument group). `names` {option: flag} replaces a generated
    flag (a spelling kept from before); `aliases` {flag: option or options} adds spellings: "--no-x"
    for a bool sets it False, a tuple sets several options at once."""
    names, aliases = names or {}, aliases or {}
    by_name = {o.name: o for o in options}
    for option in options:
        flags = [names.get(option.name, option.flag)]
        flags += [a for a, target in aliases.items() if target == option.name and not _negative(a, option)]
        kwargs = _argument(option)
        parser.add_argument(*flags, dest=option.name, **kwargs)
    for alias, target in aliases.items():
        targets = (target,) if isinstance(target, str) else tuple(target)
        if not all(t in by_name for t in targets):
            continue  # an alias of another parser's options
        first = by_name[targets[0]]
        if len(targets) > 1:
            kwargs = _argument(first)
            kwargs.update(default=argparse.SUPPRESS, targets=targets,
                          help="sets " + ", ".join(names.get(t, by_name[t].flag) for t in targets))
            parser.add_argument(alias, dest="_" + alias.strip("-").replace("-", "_"), **kwargs)
        elif _negative(alias, first):
            parser.add_argument(alias, dest=first.name, action=_Const, const=False, default=argparse.SUPPRESS,
                                help=f"same as --no-{names.get(first.name, first.flag)[2:]}")


def _negative(alias: str, option: Option) -> bool:
    return alias.startswith("--no-") and _unwrap(option.type)[0] is bool


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(the type without None, whether None was allowed); `str | os.PathLike` is str."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        if str in args or any(a is os.PathLike or typing.get_origin(a) is os.PathLike for a in args):
            return str, optional
        return (args[0] if len(args) == 1 else annotation), optional
    return annotation, False


def _argument(option: Option) -> dict[str, Any]:
    """argparse keywords for `option`."""
    kind, _ = _unwrap(option.type)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    kwargs: dict[str, Any] = {"help": option.help.replace("%", "%%") or option.name.replace("_", " ")}
    if option.default is dataclasses.MISSING:
        kwargs["required"] = True
    else:
        kwargs["default"] = option.default
        if option.default is not None and "default" not in kwargs["help"]:
            kwargs["help"] += " (default: %(default)s)"
    if kind is bool:  # (_Bool adds the default to the help where argparse does not)
        kwargs.update(action=_Bool, help=kwargs["help"].replace(" (default: %(default)s)", ""))
        return kwargs
    kwargs["action"] = _Store
    if origin is typing.Literal:
        kwargs["choices"] = args
        kwargs["type"] = type(args[0])
    elif origin in (tuple, list) or origin in (Sequence, typing.Sequence) or (
            isinstance(origin, type) and issubclass(origin, Sequence) and origin is not str):
        element = args[0] if args else str
        kwargs["type"] = element
        if element is str:
            kwargs.update(append=True, metavar=option.name.rstrip("s").upper().replace("_ID", ""))
            kwargs["help"] += " (repeat for several)"
        else:
            kwargs.update(nargs="+", as_tuple=origin is tuple, metavar="N" if element is int else "X")
    elif kind in (int, float, str):
        kwargs["type"] = kind
    else:
        raise TypeError(f"cli_args: option {option.name!r} has a type the command line cannot give: {option.type}")
    return kwargs


# ------------------------------------------------------------------------------ argparse types
def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def width_by_height(text: str) -> tuple[int, int]:
    """An argparse type: "320x240" (width x height) -> (240, 320), the (height, width) the envs take."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 320x240, got {text!r}") from None
    if min(width, height) < 8:
        raise argparse.ArgumentTypeError(f"width and height must be >= 8 pixels, got {text!r}")
    return height, width


# ------------------------------------------------------------------------------ actions
def _mark(namespace: argparse.Namespace, *dests: str) -> None:
    if getattr(namespace, GIVEN, None) is None:
        setattr(namespace, GIVEN, set())
    getattr(namespace, GIVEN).update(dests)


class _Store(argparse.Action):
    """Store (or with append=True, collect) a value, as a tuple with as_tuple=True; with `targets`,
    into each of several dests; and remember the dests as given."""

    def __init__(self, *args: Any, append: bool = False, as_tuple: bool = False,
                 targets: tuple[str, ...] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.append, self.as_tuple, self.targets = append, as_tuple, targets

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if self.as_tuple:
            values = tuple(values)
        for dest in self.targets or (self.dest,):
            if self.append:
                old = getattr(namespace, dest, None) if dest in (getattr(namespace, GIVEN, None) or ()) else None
                values_now = [*(old or []), values]
                setattr(namespace, dest, values_now)
            else:
                setattr(namespace, dest, values)
            _mark(namespace, dest)


class _Bool(argparse.BooleanOptionalAction):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.help and "default" not in self.help and self.default not in (None, argparse.SUPPRESS):
            self.help += " (default: %(default)s)"

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        super().__call__(parser, namespace, values, option_string)
        _mark(namespace, self.dest)


class _Const(argparse.Action):
    def __init__(self, *args: Any, const: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, nargs=0, const=const, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, self.const)
        _mark(namespace, self.dest)


def given(args: argparse.Namespace) -> set[str]:
    """The dests of the options given on the command line (not left at their defaults)."""
    return set(getattr(args, GIVEN, None) or ())


# ------------------------------------------------------------------------------ a command
@dataclasses.dataclass(frozen=True)
class Command:
    """A subcommand that calls one library function: its options are the function's parameters and the
    fields of the config dataclasses it takes (`configs`: parameter -> factory, whose values are the
    defaults). `add_to(parser)` adds them; `arguments(args)` gives the call's keyword arguments."""

    run: Callable[..., Any]
    configs: dict[str, Callable[..., Any]] = dataclasses.field(default_factory=dict)
    help: str = ""
    report: Callable[[Any, dict[str, Any]], None] | None = None  # prints the result (the CLI's)
    fixed: dict[str, Any] = dataclasses.field(default_factory=dict)  # arguments this command decides
    skip: tuple[str, ...] = ()  # parameters and fields not on the command line
    names: dict[str, str] = dataclasses.field(default_factory=dict)  # flags spelled otherwise than generated
    aliases: dict[str, Any] = dataclasses.field(default_factory=dict)  # other spellings (see add_options)
    derive: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # config defaults that follow other options

    def run_options(self) -> list[Option]:
        return function_options(self.run, skip=(*self.fixed, *self.configs, *self.skip))

    def config_options(self, param: str) -> list[Option]:
        return dataclass_options(self.configs[param](), skip=self.skip)

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        add_options(parser, self.run_options(), names=self.names, aliases=self.aliases)
        for param, factory in self.configs.items():
            group = parser.add_argument_group(f"{param} ({type(factory()).__name__})")
            add_options(group, self.config_options(param), names=self.names, aliases=self.aliases)
        if self.configs:
            parser.add_argument("--config", default="{}", metavar="JSON",
                                help="config fields as JSON, e.g. '{\"batch_size\": 64}' (flags win)")

    def arguments(self, args: argparse.Namespace) -> dict[str, Any]:
        """`run`'s keyword arguments: each config is built from its defaults < `derive`d ones < --config
        JSON < flags given; progress=not --quiet."""
        import json

        run = {o.name: getattr(args, o.name) for o in self.run_options()}
        run.update(self.fixed)
        if "progress" in inspect.signature(self.run).parameters:
            run["progress"] = not getattr(args, "quiet", False)
        if not self.configs:
            return run
        try:
            overrides = json.loads(getattr(args, "config", "{}"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"--config is not valid JSON ({exc}): {args.config!r}") from None
        if not isinstance(overrides, dict):
            raise ValueError(f"--config must be a JSON object, got {args.config!r}")  # noqa: TRY004 (a usage error)
        options = {param: {o.name for o in self.config_options(param)} for param in self.configs}
        unknown = sorted(set(overrides) - set().union(*options.values()))
        if unknown:
            raise ValueError(f"--config: unknown fields {unknown}")
        explicit = {**overrides, **{k: getattr(args, k) for k in given(args)}}
        values = {**(self.derive({**run, **explicit}) if self.derive else {}), **explicit}
        for param, names in options.items():
            run[param] = self.configs[param](**{k: v for k, v in values.items() if k in names})
        return run
