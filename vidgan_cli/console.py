"""The console side of a run: header, config tree, end-of-run table, and warnings repeated at the end.

Output goes to stderr through rich (stdout stays free for what a command prints as its result);
everything here is also written to the log file by the caller, so a run without a TTY (SLURM) keeps
the same information as plain lines.
"""

from __future__ import annotations

import io
import logging
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

_console: Console | None = None


def console() -> Console:
    global _console
    if _console is None:
        _console = Console(stderr=True, highlight=False)
    return _console


def config_tree(cfg: DictConfig, title: str = "config") -> Tree:
    """The composed config as a rich tree, one branch per group, values resolved."""
    tree = Tree(f"[bold]{title}")

    def add(branch: Tree, node: Any) -> None:
        for key, value in node.items():
            if isinstance(value, DictConfig):
                add(branch.add(f"[cyan]{key}"), value)
            else:
                shown = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
                branch.add(f"{key}: [green]{shown!r}")
    add(tree, OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)))
    return tree


def key_value_table(title: str, rows: list[tuple[str, Any]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value if isinstance(value, str) else f"{value:.4g}"
                      if isinstance(value, float) else str(value))
    return table


def render_text(renderable) -> str:
    """Plain text of a rich renderable (for log files and tests)."""
    buffer = io.StringIO()
    Console(file=buffer, width=110, no_color=True).print(renderable)
    return buffer.getvalue().rstrip()


class WarningCollector(logging.Handler):
    """Keeps every WARNING+ record of a run so they can be repeated once at the end."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname.lower()}: {record.getMessage()}")

    def __enter__(self) -> WarningCollector:
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger().removeHandler(self)
