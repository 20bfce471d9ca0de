"""The ``embedder`` command line.

Each sub-command lives beside the code it drives: the table below maps a command name to
``"module:function"``, where ``function(argv: list[str]) -> int`` builds its own ``argparse`` parser.
Modules are imported only when their command runs, so ``embedder --help`` is instant.
"""

from __future__ import annotations

import importlib
import os
import sys

__all__ = ["COMMANDS", "main"]

COMMANDS: dict[str, tuple[str, str]] = {
    # name: ("module:function", one-line help)
    "sample-region": ("embedder.sample:cli_main", "write the synthetic sample region (COGs + STAC)"),
    "cube": ("embedder.data.cubes:cli_main", "load one tile's S1+S2 cube from a catalog, print a summary"),
    "stac-snapshot": (
        "embedder.data.snapshot:cli_main",
        "write a catalog's items (bbox, period) to a stac-geoparquet snapshot for bulk discovery",
    ),
    "shards": ("embedder.data.shards:cli_main", "build training shards for one cube, or inspect shards"),
    "verify": (
        "embedder.store:cli_verify",
        "check an embedding store is complete and consistent (exit 0 = OK)",
    ),
    "plan": (
        "embedder.plan:cli_main",
        "estimate tiles, pixel-dates, GPU-hours, bytes and cost of an embedding run",
    ),
    "secrets-scan": ("embedder.secrets_scan:cli_main", "scan repo, logs and store attributes for secrets"),
    "curves": (
        "embedder.curves:cli_main",
        "plot training curves (SPEC 9) from run dirs' metrics.jsonl to PNG",
    ),
    "gpp": ("embedder.gpp:cli_main", "evaluate per-date features against flux-tower GPP (SPEC 8)"),
    "gpp-towers": (
        "embedder.evaluation.towers:cli_main",
        "tower-site scenes driven by real fAPAR -> embeddings -> GPP vs real towers",
    ),
    "report": ("embedder.evaluation.report:cli_main", "Markdown + PNG report of a demo run folder"),
    "real-data": (
        "embedder.evaluation.realdata:cli_main",
        "embed the real CropHarvest S1+S2 cube; reconstruction error",
    ),
    "probe": ("embedder.serve.cli:cli_probe", "one pixel's embedding time series from a store (CSV/JSON)"),
    "region": ("embedder.serve.cli:cli_region", "summarise a store region per date or time window"),
    "export": ("embedder.serve.cli:cli_export", "export a store region to GeoTIFF, NetCDF or Zarr"),
    "serve": ("embedder.serve.http:cli_serve", "read-only HTTP service + web map of a store"),
}


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: embedder COMMAND [options]   (embedder COMMAND --help for a command's options)", ""]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in sorted(COMMANDS.items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run ``embedder COMMAND ...``; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"embedder: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    target, _ = COMMANDS[name]
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(func(rest) or 0)
    except Exception as err:
        if not _is_user_error(err) or os.environ.get("EMBEDDER_TRACEBACK"):
            raise
        print(f"embedder {name}: {type(err).__name__}: {err}", file=sys.stderr)
        return 1


def _is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is a named error about the user's input (printed as one line, not a traceback).

    The project's own exceptions (every class defined under ``embedder``, which name the offending value
    and what to do) and missing or unreadable files. Anything else is a bug and keeps its traceback;
    ``EMBEDDER_TRACEBACK=1`` shows the traceback of named errors too.
    """
    own = any(c.__module__.split(".")[0] == "embedder" for c in type(err).__mro__)
    return own or isinstance(
        err, FileNotFoundError | NotADirectoryError | PermissionError | IsADirectoryError
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
