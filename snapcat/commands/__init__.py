"""One module per ``snapcat`` subcommand; each exposes ``register(subparsers)``. This package's
own module holds what the commands share: :func:`config_from_args`,
:class:`DefaultsHelpFormatter`, and the flags of the two Kubeflow submit commands
(:func:`add_kfp_submit_arguments`).

Configs are frozen dataclasses built from an argparse ``Namespace`` by their fields, so a field is
written once (in its dataclass, default included) instead of copied flag by flag.

Each field takes the value of the ``Namespace`` attribute of the same name (argparse's ``dest``:
``--image-size`` is ``image_size``), or of ``renames[field]`` where the flag is named otherwise.
A field may instead be given in ``values`` (derived values, e.g. ``progress=not args.no_progress``)
or listed in ``defaults`` (not a flag: the dataclass's default applies). Any other field without
a matching attribute is a :class:`TypeError`: a field added to a config and forgotten in its
command fails the command's tests instead of silently keeping its default.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

C = TypeVar("C")


def config_from_args(
    cls: type[C],
    args: argparse.Namespace,
    *,
    renames: Mapping[str, str] | None = None,
    defaults: Iterable[str] = (),
    **values: Any,
) -> C:
    """``cls`` (a dataclass) with every init field from ``args`` (see the module docstring)."""
    renames, defaults = dict(renames or {}), set(defaults)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = (set(renames) | defaults | set(values)) - names
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {', '.join(sorted(unknown))}")
    kwargs, missing = dict(values), []
    for name in sorted(names - set(values) - defaults):
        dest = renames.get(name, name)
        if hasattr(args, dest):
            kwargs[name] = getattr(args, dest)
        else:
            missing.append(name)
    if missing:
        raise TypeError(
            f"{cls.__name__}: no argument for field(s) {', '.join(missing)}; add the flag, or "
            "name the field in renames, defaults or values"
        )
    return cls(**kwargs)


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help that shows each option's default (read from its config dataclass, so ``--help`` and
    the code cannot disagree), except where there is none to show: no default (``None``), an
    off switch (``store_true``), or a help text that already says what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            action.default is None
            or action.default is False
            or "default" in text.lower()
            or isinstance(action, argparse._StoreTrueAction)  # noqa: SLF001
        ):
            return text
        return super()._get_help_string(action)


def add_allow_root_argument(parser: argparse.ArgumentParser) -> None:
    """``--allow-root``, as every command that reads a manifest takes it: the folders or bucket
    prefixes a manifest's rows may name besides the manifest's own (docs/data.md)."""
    parser.add_argument(
        "--allow-root",
        dest="allow_roots",
        action="append",
        default=[],
        metavar="PATH_OR_URI",
        help="a folder or bucket prefix a manifest may name besides its own folder (repeatable; "
        "rows elsewhere, or with other schemes, are refused: docs/data.md)",
    )


def add_kfp_submit_arguments(
    parser: argparse.ArgumentParser, *, dry_run_help: str, schedule_example: str, param_help: str
) -> None:
    """The flags ``snapcat pipeline submit`` and ``snapcat batch-pipeline submit`` share: where
    the run goes, its name, a schedule, a compiled package, its parameters."""
    parser.add_argument(
        "--host",
        help="KFP API URL, e.g. http://localhost:8080 after kubectl port-forward (default: "
        "$KF_PIPELINES_ENDPOINT; in a pod, the in-cluster service; else your kubeconfig's API "
        "server proxy)",
    )
    parser.add_argument("--dry-run", action="store_true", help=dry_run_help)
    parser.add_argument("--experiment", default="snapcat")
    parser.add_argument("--run-name")
    parser.add_argument("--namespace", help="Kubeflow profile namespace (multi-user installs)")
    parser.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help=param_help
    )
    parser.add_argument(
        "--schedule",
        metavar="CRON",
        help=f"create a recurring run instead, e.g. '{schedule_example}' (KFP cron has seconds)",
    )
    parser.add_argument("--package", help="a compiled spec to submit (default: compile now)")
