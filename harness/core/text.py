"""Text from files shown on a terminal: control characters made visible.

A checkpoint name, item id or model output can hold terminal escape sequences (clear the screen,
set the window title, hide what follows) or direction overrides that reorder what is read. Before
such text reaches a terminal its control characters are written as escapes (`\\x1b`, `\\u202e`),
as the sample viewer already shows them in HTML. Newlines and tabs stay unless `keep_lines=False`.
"""
from __future__ import annotations

import re

# C0 and C1 controls, DEL, and the Unicode direction marks / overrides / isolates (Trojan Source).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_CONTROL_NO_LINES = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: object, keep_lines: bool = True) -> str:
    """`text` (str() of it) with its control characters written as escapes."""
    return (_CONTROL if keep_lines else _CONTROL_NO_LINES).sub(_escape, str(text))
