"""`python -m atts` is the `atts` command."""

import sys

from atts.cli.main import main

sys.exit(main())
