"""`python -m harness ...` runs the CLI; so does `accelerate launch -m harness eval ...` (one
process per rank, see harness.core.parallel)."""
import sys

from harness.cli import main

sys.exit(main())
