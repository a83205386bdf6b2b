"""One place that configures structlog: JSON lines in a cluster, readable lines on a terminal."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Literal

import structlog

LogFormat = Literal["auto", "json", "console"]


class _Stderr:
    """sys.stderr as it is at each write, not as it was when logging was configured: whoever
    swaps sys.stderr later (a test runner's capture, say) still gets the lines, and a stream
    closed since is never written to."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(fmt: LogFormat = "auto", level: str = "info") -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--log-format and --log-level, the same on every mipart binary."""
    parser.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default="auto",
        help="auto: JSON lines unless stderr is a terminal",
    )
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], default="info"
    )


def configure_from(args: argparse.Namespace) -> None:
    configure(args.log_format, args.log_level)
