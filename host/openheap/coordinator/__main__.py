"""``python -m openheap.coordinator --home HOME [--detach] [options]`` (see daemon.py)."""

import sys

from .daemon import main

sys.exit(main())
