"""`python -m danlu.cli`: the same app as the `danlu` command."""

from danlu.cli.commands import app

app()
