"""The command line: `danlu` (typer app in commands.py), the chat REPL, one-shot runs and terminal views.

Per-feature commands live beside their feature (`fit/cli.py`, `evaluate/cli.py`, `finetune/cli.py`,
`arena/cli.py`, `bench/cli.py`, `server/cli.py`) and are registered on this app by commands.py.
"""

from danlu.cli.commands import app, friendly

__all__ = ["app", "friendly"]
