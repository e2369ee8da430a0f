"""What the CLI commands run (harness.cli parses the flags and calls these)."""
