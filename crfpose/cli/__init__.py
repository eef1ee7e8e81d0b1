"""The ``crfpose`` command line: one module per command, each a thin layer over the library.

Shape legend: none.

    crfpose [--plugin MODULE ...] COMMAND ...     train, eval, calibrate, predict, viz, demo, app, import-official

Each command module has ``SUMMARY`` (its one-line help), ``add_arguments(parser)`` and
``run(args) -> int`` (the exit status). A bad argument, config, file or checkpoint is one line on
stderr and exit 2; a training loss that became NaN or infinite exits 1 (the last good checkpoint is
kept); Ctrl-C exits 130. ``--plugin MODULE`` imports a module first, e.g. one that registers a backbone
of your own (:func:`crfpose.register_backbone`), so that its checkpoints work in every command.
Under ``torchrun --nproc_per_node N -m crfpose train ...`` training runs with DistributedDataParallel.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
from typing import Optional, Sequence

from crfpose import __version__
from crfpose.cli import app, calibrate, demo, evaluate, import_official, predict, train, viz

__all__ = ["main", "build_parser", "COMMANDS"]

COMMANDS = {
    "train": train,
    "eval": evaluate,
    "calibrate": calibrate,
    "predict": predict,
    "viz": viz,
    "demo": demo,
    "app": app,
    "import-official": import_official,
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``crfpose`` (every option documented in ``--help``)."""
    parser = argparse.ArgumentParser(prog="crfpose", description="Human pose estimation with an exact tree CRF.")
    parser.add_argument("--version", action="version", version=f"crfpose {__version__}")
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this Python module first (repeatable), e.g. one that registers a backbone of your own",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        module.add_arguments(commands.add_parser(name, help=module.SUMMARY, description=module.SUMMARY))
    return parser


def _os_error(err: OSError) -> str:
    """One line for a failed file operation: the path and the reason (``no space left on device``, ...)."""
    reason = "no space left on device" if err.errno == errno.ENOSPC else (err.strerror or str(err)).lower()
    path = err.filename if err.filename is not None else "a file"
    return f"{path}: {reason}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``crfpose`` command; returns the exit status (see the module docstring)."""
    from crfpose.engine import NonFiniteLoss

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "train" and all("=" in item and not item.startswith("-") for item in extra):
        args.overrides += extra  # overrides after an option: CONFIG --resume X key=value
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        for module in args.plugin:
            try:
                importlib.import_module(module)
            except ImportError as err:
                raise ValueError(f"--plugin {module}: cannot import it ({err})") from None
        return COMMANDS[args.command].run(args)
    except ValueError as err:
        print(f"crfpose {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"crfpose {args.command}: error: {_os_error(err)}", file=sys.stderr)
        return 2
    except NonFiniteLoss as err:
        print(f"crfpose {args.command}: stopped: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # train says where to resume from; the other commands have nothing to keep
        print(f"crfpose {args.command}: interrupted", file=sys.stderr)
        return 130
