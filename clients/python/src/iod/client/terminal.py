"""Text from customers (or any server) made safe to print in a terminal with Rich.

Rich reads `[...]` as markup: `[/oops]` crashes it and `[link=…]`, `[blink]` plant
hyperlinks and effects in an operator's terminal. Control characters (ESC sequences, carriage
returns, bidirectional overrides) can repaint, hide or reorder what is shown. Every string that
did not come from this program's own code goes through `safe()` (markup) or `clean()` (plain
output) before it reaches a console.
"""

from __future__ import annotations

import re

from rich.markup import escape

# C0 and C1 control characters, DEL, and the invisible format characters that reorder or hide
# text (bidirectional embeddings, overrides and isolates, zero-width characters, the BOM).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(text: object) -> str:
    """`text` with every control or invisible format character shown as its escape
    (`\\x1b`, `\\u202e`), so it prints on one line exactly as it is."""
    return _UNSAFE.sub(_visible, str(text))


def safe(text: object) -> str:
    """`clean(text)` with Rich markup escaped: prints literally through `Console.print`."""
    return escape(clean(text))
