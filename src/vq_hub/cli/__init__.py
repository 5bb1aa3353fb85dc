"""`vq-hub`: generate, reconstruct, tokenize, detokenize, compress, decompress, evaluate, convert and inspect from the
command line.

Each subcommand lives in a module of this package with a `register(commands)` function. Errors are one line on
stderr and a non-zero exit code; `--debug` shows the traceback.
"""

import sys

from . import codebook, codec, convert, demo, evaluate, generate, images, info
from ._common import ArgumentParser, CommandError, HelpFormatter

COMMAND_MODULES = (generate, images, codec, evaluate, codebook, info, convert, demo)

__all__ = ["CommandError", "build_parser", "main"]


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="vq-hub", description="Discrete image tokenizers and priors over their codes.",
                            formatter_class=HelpFormatter)  # fmt: skip
    parser.add_argument("--debug", action="store_true", help="Show the full traceback on errors.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser = _with_formatter(commands.add_parser)
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser


def _with_formatter(add_parser):
    """Subcommand parsers show every default in `--help`, like the main parser."""

    def add(name, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("description", kwargs.get("help"))
        return add_parser(name, **kwargs)

    return add


def one_line(error: BaseException) -> str:
    """The first line of an error's message, followed by its cause's when the cause says something new."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    cause = error.__cause__
    if cause is not None and str(cause).strip():
        cause_line = str(cause).strip().splitlines()[0]
        if cause_line not in message:
            message += f" ({type(cause).__name__}: {cause_line})"
    return message


def quiet_libraries() -> None:
    """No loading bars or library warnings between the command and its one-line answer."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.debug:
        quiet_libraries()
    try:
        print(args.run(args))
        return 0
    except Exception as error:  # one clear line unless --debug
        if args.debug:
            raise
        print(f"vq-hub {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
