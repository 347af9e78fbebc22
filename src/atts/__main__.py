"""`python -m atts` is the `atts` command."""

from atts.cli.main import run

run()
