"""One shape for the trainer's stand-alone subcommands (``fetch``, ``import-ccm``, ``import-authors``):
``register`` adds the command to ``python -m training``, ``main`` runs it as
``python -m <module>``, both from the module's ``add_arguments`` and ``run``."""

from __future__ import annotations

import argparse
from typing import Callable, Sequence


def subcommand(name: str, help: str, module: str, doc: str, add_arguments: Callable[[argparse.ArgumentParser], None],
               run: Callable[[argparse.Namespace], int], description: str | None = None):
    """``(register, main)`` of the subcommand ``name`` (``doc``: the module's docstring)."""

    def register(subparsers) -> None:
        p = subparsers.add_parser(name, help=help, description=description or doc.split("\n\n")[0])
        add_arguments(p)
        p.set_defaults(func=run)

    def main(argv: Sequence[str] | None = None) -> int:
        p = argparse.ArgumentParser(prog=f"python -m {module}", description=doc,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments(p)
        return run(p.parse_args(argv))

    register.__doc__ = f"Add ``{name}`` to ``python -m training``."
    main.__doc__ = f"``python -m {module}``: the ``{name}`` command on its own."
    return register, main
