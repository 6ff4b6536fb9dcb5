"""`wordfreq-py`: a warden tool component written in Python.

Two tools over text the caller passes in (no capabilities needed):

- ``word_frequencies``: the most frequent words of a text.
- ``slugify``: a URL-safe slug for a title.

Build (from the repository root)::

    componentize-py -d guest-sdk/wit -w tool componentize \\
        -p tools/wordfreq-py -p guest-sdk/python app -o wordfreq-py.wasm
"""

import re
import unicodedata
from collections import Counter

from warden_sdk.tool import ToolWorld, tool

MAX_TOP = 50

# A word: letters, with inner apostrophes or hyphens ("don't", "well-known").
WORD = re.compile(r"[^\W\d_]+(?:['\u2019-][^\W\d_]+)*")


@tool(
    description="Count the words of a text and return the most frequent ones "
    "(case-insensitive), with the total and distinct word counts.",
    parameters={
        "type": "object",
        "properties": {
            "text": {"type": "string"},
            "top": {"type": "integer", "minimum": 1, "maximum": MAX_TOP, "default": 10},
        },
        "required": ["text"],
        "additionalProperties": False,
    },
)
def word_frequencies(text: str, top: int = 10) -> dict:
    """Top-``top`` words by count; ties in alphabetical order."""
    if not 1 <= top <= MAX_TOP:
        raise ValueError(f"top must be between 1 and {MAX_TOP}, got {top}")
    counts = Counter(w.casefold().replace("\u2019", "'") for w in WORD.findall(text))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]
    return {
        "total_words": sum(counts.values()),
        "distinct_words": len(counts),
        "top": [{"word": w, "count": c} for w, c in ranked],
    }


@tool(
    description="Turn a title into a lowercase ASCII slug for a URL or a file "
    "name, e.g. 'Héllo, World!' -> 'hello-world'.",
    parameters={
        "type": "object",
        "properties": {
            "text": {"type": "string"},
            "max_length": {"type": "integer", "minimum": 1, "maximum": 200, "default": 80},
        },
        "required": ["text"],
        "additionalProperties": False,
    },
)
def slugify(text: str, max_length: int = 80) -> str:
    """Accents dropped, runs of anything else than letters/digits -> '-'."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    slug = slug[:max_length].rstrip("-")
    if not slug:
        raise ValueError("the text has no letters or digits to make a slug from")
    return slug


class WitWorld(ToolWorld):
    """The component's exports: ``describe`` and ``invoke`` over the tools above."""
