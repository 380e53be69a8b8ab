"""``python -m cockpit``: the same as the ``cockpit`` command (the UI's shell key runs it so)."""

import sys

from cockpit.cli import main

sys.exit(main())
