"""Command line interface (argparse).

    python -m ade_engine process file --input F --output-dir D --config-package C
                                      [--output F.xlsx] [--log-format ndjson|text]
                                      [--log-level L] [--debug] [--quiet]
                                      [--input-sheet S ...] [--active-sheet-only]
                                      [--logs-dir D]
    python -m ade_engine config validate --config-package C [--log-format ..] [--log-level ..]
    python -m ade_engine version | --version

Exit codes: 0 success, 1 failed run / invalid config, 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ade_engine import __version__
from ade_engine.config import ConfigError, load_config_package
from ade_engine.events import LEVELS, LOG_FORMATS, EventLogger
from ade_engine.pipeline import ProcessOptions, run_process


def _existing_file(value: str) -> Path:
    path = Path(value)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"file does not exist: {value}")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"not a file: {value}")
    return path.resolve()


def _existing_dir(value: str) -> Path:
    path = Path(value)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"directory does not exist: {value}")
    return path.resolve()


def _xlsx_path(value: str) -> Path:
    if not value.lower().endswith(".xlsx"):
        raise argparse.ArgumentTypeError(f"output file must end in .xlsx: {value}")
    return Path(value).resolve()


def _add_logging_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-format", type=str.lower, choices=LOG_FORMATS, default="text",
                        help="event format on stderr (default: text)")
    parser.add_argument("--log-level", type=str.lower, choices=list(LEVELS), default="info",
                        metavar="LEVEL", help="debug, info, warning, error or critical (default: info)")
    parser.add_argument("--debug", action="store_true", help="same as --log-level debug")
    parser.add_argument("--quiet", action="store_true",
                        help="same as --log-level warning (wins over --debug)")


def _level(args: argparse.Namespace) -> str:
    if args.quiet:
        return "warning"
    if args.debug:
        return "debug"
    return args.log_level


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ade_engine",
        description="Reference ADE engine: normalise CSV files with a config package.")
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    process = commands.add_parser("process", help="normalise input files")
    process_commands = process.add_subparsers(dest="process_command", metavar="MODE", required=True)
    pfile = process_commands.add_parser("file", help="normalise one input file")
    pfile.add_argument("-i", "--input", required=True, type=_existing_file, help="input file")
    pfile.add_argument("-o", "--output", type=_xlsx_path, help="output workbook (.xlsx)")
    pfile.add_argument("--output-dir", type=Path,
                       help="output directory; the file is <input stem>_normalized.xlsx")
    pfile.add_argument("--config-package", required=True, type=_existing_dir,
                       help="config package directory")
    pfile.add_argument("-s", "--input-sheet", action="append", default=[], metavar="NAME",
                       help="sheet to process (repeatable; default: all)")
    pfile.add_argument("--active-sheet-only", action="store_true",
                       help="process only the active sheet")
    pfile.add_argument("--logs-dir", type=Path, help="also write the event log to this directory")
    _add_logging_options(pfile)
    pfile.set_defaults(subparser=pfile)

    config = commands.add_parser("config", help="config package tools")
    config_commands = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    validate = config_commands.add_parser("validate", help="load a config package and report on it")
    validate.add_argument("--config-package", required=True, type=_existing_dir,
                          help="config package directory")
    _add_logging_options(validate)

    commands.add_parser("version", help="print the engine version")
    return parser


def _process_file(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.subparser
    if args.output is not None and args.output_dir is not None:
        parser.error("--output and --output-dir cannot be used together")
    if args.active_sheet_only and args.input_sheet:
        parser.error("--active-sheet-only cannot be combined with --input-sheet")
    stem = args.input.stem
    if args.output is not None:
        output_file = args.output
    else:
        output_dir = (args.output_dir or args.input.parent).resolve()
        output_file = output_dir / f"{stem}_normalized.xlsx"

    level = _level(args)
    logger = EventLogger.to_stderr(level, args.log_format)
    logs_file = None
    try:
        if args.logs_dir is not None:
            logs_dir = args.logs_dir.resolve()
            suffix = "_engine_events.ndjson" if args.log_format == "ndjson" else "_engine.log"
            logs_file = logs_dir / f"{stem}{suffix}"
            try:
                logs_dir.mkdir(parents=True, exist_ok=True)
                logger.add_file(logs_file, level, args.log_format)
            except OSError as exc:
                parser.error(f"cannot open log file in {args.logs_dir}: {exc.strerror or exc}")
        options = ProcessOptions(
            input=args.input, output_file=output_file, config_package=args.config_package,
            input_sheets=list(args.input_sheet), active_sheet_only=args.active_sheet_only,
            logs_file=logs_file)
        return run_process(options, logger)
    finally:
        logger.close()


def _validate_config(args: argparse.Namespace) -> int:
    logger = EventLogger.to_stderr(_level(args), args.log_format)
    try:
        package = load_config_package(args.config_package)
    except ConfigError as exc:
        logger.error(f"Config package is invalid: {exc}", config_package=str(args.config_package))
        print(f"Config package INVALID: {exc}")
        return 1
    logger.emit("info", "engine.config.loaded", "Config package loaded", {
        "config_package": str(args.config_package),
        "entrypoint": "auto-discovery",
        "plugin_modules": package.modules,
        "fields": [spec.name for spec in package.fields],
        "settings": {},
    })
    counts = package.registry.counts()
    print("Config package OK")
    print(" ".join(f"{name}={value}" for name, value in counts.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "version":
        print(__version__)
        return 0
    if args.command == "config":
        return _validate_config(args)
    return _process_file(args)


if __name__ == "__main__":
    sys.exit(main())
