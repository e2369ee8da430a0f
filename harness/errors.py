"""The one error type users see: a single line naming the thing and the fix."""


class HarnessError(Exception):
    """A bad input or state. The CLI prints `error: <message>` and exits with status 2."""


class ContextOverflow(HarnessError):
    """A prompt (plus its reply budget) does not fit the model's context: callers that can shorten
    their prompts (e.g. `harness critic agreement --answer-words`) catch this one kind."""
