"""Command lines of the training and evaluation scripts: argument dataclasses parsed by ``HfArgumentParser``, with
a recipe file (``--config x.yaml``, flat ``name: value`` pairs) supplying defaults that flags on the command line
override. Shared by :mod:`msaf_hf.training` and :mod:`msaf_hf.evaluation`, so it imports neither."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from collections.abc import Iterable, Sequence
from typing import Any

import yaml

from .presets import configuration_dir, find_configuration_file, list_accelerate_configs, list_presets, list_recipes

__all__ = ["check_field_types", "describe_configurations", "load_recipe", "parse_command_line"]

_SCALAR_TYPES = {"int": int, "float": float, "bool": bool, "str": str}
_MAPPING_FIELDS = {"config_overrides"}  # a string on the command line, a mapping in a recipe


def check_field_types(arguments: Any, names: Iterable[str] | None = None) -> None:
    """Check that scalar fields (``int``, ``float``, ``bool``, ``str``, optionally ``Optional``) hold their type.

    Recipe values reach the dataclasses without argparse's conversion, so ``seed: [1, 2]`` or ``max_steps: 2.5``
    would otherwise fail much later, or be truncated silently. Integral floats (``max_steps: 300.0``) become ints.
    """
    for f in dataclasses.fields(arguments):
        if names is not None and f.name not in names:
            continue
        # HfArgumentParser replaces a field's type by the non-None member of `X | None`: read the declared
        # annotation, so that a field that may be None (eval_split: 'none' -> None) is still known to allow it.
        expected, optional = _scalar_type(_declared_annotation(type(arguments), f))
        optional = optional or f.default is None
        value = getattr(arguments, f.name)
        if expected is None or (value is None and optional) or (f.name in _MAPPING_FIELDS and isinstance(value, dict)):
            continue
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            setattr(arguments, f.name, float(value))
            continue
        if expected is int and isinstance(value, float) and value.is_integer():
            setattr(arguments, f.name, int(value))
            continue
        if expected is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            setattr(arguments, f.name, str(value))  # e.g. eval_steps: 100 (the command line gives "100")
            continue
        if isinstance(value, expected) and (expected is bool or not isinstance(value, bool)):
            continue
        kind = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[expected]
        raise ValueError(
            f"{type(arguments).__name__}.{f.name} must be {kind}{' (or None)' if optional else ''}, got {value!r} "
            f"({type(value).__name__})."
        )


def _declared_annotation(cls: type, f: dataclasses.Field) -> Any:
    """The annotation ``f`` was declared with (the class's ``__annotations__``, which ``HfArgumentParser`` leaves
    alone), else its current ``type``."""
    for klass in cls.__mro__:
        annotation = vars(klass).get("__annotations__", {}).get(f.name)
        if annotation is not None:
            return annotation
    return f.type


def _scalar_type(annotation: Any) -> tuple[type | None, bool]:
    """(int/float/bool/str or None, whether None is allowed) of a field annotation, a string or resolved (as
    ``HfArgumentParser`` leaves it)."""
    if isinstance(annotation, str):
        text = annotation.replace(" ", "")
        if text.startswith("Optional[") and text.endswith("]"):
            return _SCALAR_TYPES.get(text[len("Optional[") : -1]), True
        members = [m for m in text.split("|") if m != "None"]  # "int | None" (PEP 604)
        return _SCALAR_TYPES.get(members[0]) if len(members) == 1 else None, len(members) < len(text.split("|"))
    if annotation in _SCALAR_TYPES.values():
        return annotation, False
    members = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(members) == 1 and len(typing.get_args(annotation)) == 2 and members[0] in _SCALAR_TYPES.values():
        return members[0], True
    return None, False


def load_recipe(path: str | os.PathLike) -> dict[str, Any]:
    """Read a recipe: a YAML (or JSON) mapping of flat ``argument: value`` pairs."""
    file = find_configuration_file(path)  # a bare name (quickstart, quickstart.yaml) finds the packaged recipe
    if file is None:
        raise FileNotFoundError(
            f"Recipe file {str(path)!r} not found: not a file, nor a packaged recipe ({', '.join(list_recipes())})."
        )
    try:
        values = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"Recipe {str(file)!r} is not valid YAML: {err}") from err
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(
            f"Recipe {str(file)!r} must be a mapping of 'argument: value' pairs, got {type(values).__name__}."
        )
    return values


def describe_configurations() -> str:
    """The packaged recipes, model presets and Accelerate configs by name (``--list_configs``)."""
    folder = configuration_dir()
    lines = [f"Packaged configurations (in {folder}):"]
    for title, names, usage in (
        ("recipes", list_recipes(), "--config NAME"),
        ("model presets", list_presets(), "--preset NAME"),
        ("Accelerate configs", list_accelerate_configs(), '--config_file "$(msaf-hf config-path NAME)"'),
    ):
        lines.append(f"  {title} ({usage}): {', '.join(names)}")
    return "\n".join(lines)


def _build_parser(dataclass_types: Sequence[type]) -> Any:
    from transformers import HfArgumentParser

    parser = HfArgumentParser(list(dataclass_types))
    parser.add_argument(
        "--config",
        default=None,
        help="Recipe providing defaults (command-line flags override it): a packaged recipe's name (quickstart, "
        "camvid, cityscapes, ...: see --list_configs) or a YAML file of flat 'argument: value' pairs.",
    )
    parser.add_argument(
        "--list_configs",
        "--list-configs",
        action="store_true",
        help="Print the packaged recipes, model presets and Accelerate configs by name, and exit.",
    )
    return parser


def parse_command_line(
    argv: Sequence[str] | None,
    dataclass_types: Sequence[type],
    *,
    ignore_unknown_recipe_keys: bool = False,
    recipe_exclude: Sequence[str] = (),
) -> tuple[Any, ...]:
    """Parse the command line into the dataclasses, with ``--config recipe.yaml`` supplying defaults.

    The recipe's values become the parser's defaults, so any flag given on the command line wins.
    Unknown recipe keys and invalid choices are errors naming the key (unknown keys are skipped with
    ``ignore_unknown_recipe_keys``, e.g. to reuse a training recipe for evaluation); keys in ``recipe_exclude`` are
    never taken from the recipe.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    pre.add_argument("--list_configs", "--list-configs", action="store_true")
    known, _ = pre.parse_known_args(argv)
    if known.list_configs:
        print(describe_configurations())
        raise SystemExit(0)
    parser = _build_parser(dataclass_types)
    if known.config is not None:
        recipe = {k: v for k, v in load_recipe(known.config).items() if k not in recipe_exclude}
        actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
        unknown = sorted(set(recipe) - set(actions))
        if unknown and ignore_unknown_recipe_keys:
            recipe = {k: v for k, v in recipe.items() if k in actions}
        elif unknown:
            raise ValueError(
                f"Recipe {known.config!r}: unknown argument(s) {unknown}. Valid arguments are the command-line flags "
                "without dashes (see --help)."
            )
        for key, value in recipe.items():
            choices = actions[key].choices
            if choices is not None and value is not None and value not in choices:
                raise ValueError(f"Recipe {known.config!r}: {key}={value!r} is not one of {list(choices)}.")
        # Defaults bypass argparse's type conversion for non-strings: lists/bools/numbers from YAML keep their types.
        parser.set_defaults(**recipe)
    outputs = tuple(o for o in parser.parse_args_into_dataclasses(args=argv) if dataclasses.is_dataclass(o))
    for output in outputs:  # recipe values skip argparse's type conversion: seed: [1, 2] is an error here
        check_field_types(output)
    return outputs


