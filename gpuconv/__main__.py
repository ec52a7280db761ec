"""`python -m gpuconv ...`: the `gpuconv` command (gpuconv.cli)."""
import sys

from .cli import main

sys.exit(main())
