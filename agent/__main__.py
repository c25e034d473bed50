"""``python -m agent``: the node agent (same as ``topology agent``)."""

import sys

from agent.cli import main

sys.exit(main())
