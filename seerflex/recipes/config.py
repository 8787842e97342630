"""Recipe configs, torchtune style: a dataclass of knobs, an optional YAML file, ``key=value`` overrides.

    seerflex eval ppl [CONFIG.yaml] [key=value ...] [--key value ...]

Every recipe parses its command line here. ``--key value`` is the same as ``key=value`` (dashes
become underscores; several values make a list; ``--flag`` / ``--no-flag`` for true/false), so
older command lines keep working. Values are read as YAML scalars and checked against the
field's type; a comma-separated string fills a list field (``scorers=dense,gate``). Policies use
the Python API's spec syntax everywhere (``seerflex.policies``).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml
from rich.table import Table
from rich.text import Text

from seerflex.console import console

T = TypeVar("T")
NONE = ("none", "null", "")
KEY_VALUE = re.compile(r"^[A-Za-z_][\w.-]*=")  # "steps=10", not "topp:density=0.1"


def knob(default: Any, help: str) -> Any:  # noqa: A002 -- the word people expect
    """A recipe field with a help line (lists and dicts get a fresh copy per recipe)."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def parse_recipe(cls: type[T], argv: list[str], *, prog: str, positional: tuple[str, ...] = ()) -> T | None:
    """The recipe ``cls`` from ``argv``; None after printing help (``-h``/``--help``)."""
    if any(a in ("-h", "--help") for a in argv):
        print_help(cls, prog, positional)
        return None
    fields = {f.name: f for f in dataclasses.fields(cls)}
    data: dict[str, Any] = {}
    args = list(argv)
    if args and not args[0].startswith("-") and not KEY_VALUE.match(args[0]) and args[0].endswith((".yaml", ".yml")):
        data = _read_yaml(Path(args.pop(0)))
    bare: list[str] = []
    while args:
        arg = args.pop(0)
        if arg.startswith("--"):
            key, sep, value = arg[2:].partition("=")
            key = key.replace("-", "_")
            values = [value] if sep else []
            while not sep and args and not args[0].startswith("--") and not KEY_VALUE.match(args[0]):
                values.append(args.pop(0))
            if not values:  # a flag: --check / --no-check
                flag = key[3:] if key.startswith("no_") and key not in fields else key
                _set(data, flag, key == flag)
            else:
                _set(data, key, values[0] if len(values) == 1 else values)
        elif KEY_VALUE.match(arg):
            key, _, value = arg.partition("=")
            _set(data, key.strip(), value)
        else:
            bare.append(arg)
    if len(bare) > len(positional):
        raise ValueError(f"{prog}: unexpected argument {bare[len(positional)]!r} (options are key=value; see --help)")
    for name, value in zip(positional, bare):
        data[name] = value
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{prog}: unknown key(s) {unknown}; known: {sorted(fields)}")
    missing = [name for name in positional if name not in data and fields[name].default is dataclasses.MISSING]
    if missing:
        raise ValueError(f"{prog}: missing {', '.join(missing)} (usage: {prog} {' '.join(p.upper() for p in positional)})")
    hints = typing.get_type_hints(cls)
    return cls(**{k: coerce(v, hints[k], f"{prog}: {k}") for k, v in data.items()})


def coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` (a string from the command line or a YAML value) as type ``hint``, or a one-line error.

    Text fields keep what was typed (``no``, ``0123``); ``none``/``null`` empty an optional field.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, str) and value.strip().lower() in NONE)):
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], where) if len(inner) == 1 else value
    if hint is str:
        return value if isinstance(value, str) else str(value)
    if origin is list:
        plain = isinstance(value, str) and not value.lstrip().startswith("[")  # "a,b" or a YAML list "[a, b]"
        items = value.split(",") if plain and args and args[0] is str else value
        items = _scalar(items) if isinstance(items, str) else items
        items = items.split(",") if isinstance(items, str) else items
        items = items if isinstance(items, (list, tuple)) else [items]
        return [coerce(item, args[0] if args else Any, where) for item in items]
    if isinstance(value, str):
        value = _scalar(value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping (YAML {{key: value}}), got {value!r}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
            raise ValueError(f"{where}: expected a whole number, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    return value


def print_help(cls: type, prog: str, positional: tuple[str, ...] = ()) -> None:
    usage = " ".join([prog, *(p.upper() for p in positional), "[CONFIG.yaml]", "[key=value ...]"])
    console.print(f"usage: {usage}", markup=False, highlight=False)
    if cls.__doc__:
        console.print(cls.__doc__.strip(), markup=False, highlight=False)
    table = Table(title=None, show_edge=False)
    for column in ("key", "default", "meaning"):
        table.add_column(column)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)")
        table.add_row(*(Text(x) for x in (f.name, repr(default), f.metadata.get("help", ""))))  # no markup: "[a, b]"
    console.print(table)


def _scalar(text: str) -> Any:
    """A YAML scalar, with numbers such as ``1e-3`` that YAML 1.1 leaves as text read as numbers."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _set(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    for p in parents:
        data = data.setdefault(p, {})
        if not isinstance(data, dict):
            raise ValueError(f"cannot set {key}: {p} is not a mapping")
    data[leaf] = _scalar(value) if isinstance(value, str) and parents else value


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"recipe config {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ValueError(f"{path} is not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of recipe keys, got {type(data).__name__}")
    return data
