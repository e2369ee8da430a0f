"""The one error type users see: a single line naming the thing and the fix."""


class HarnessError(Exception):
    """A bad input or state. The CLI prints `error: <message>` and exits with status 2."""
