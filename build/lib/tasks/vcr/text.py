"""VCR token lists -> plain text.

An object reference (a list of ints indexing `objects`) is rendered as words: each index i
becomes `<objects[i]><i>` (e.g. "person0", "dog1"), so different people stay distinct and the
text still names each object's class; several indices are joined English-style
("person0 and dog1", "person0, person2 and dog1"). Word tokens are joined by spaces, with no
space before punctuation. This keeps the student and the CLIP teacher on ordinary text.
"""

from __future__ import annotations

from typing import Any, List, Sequence

_NO_SPACE_BEFORE = {".", ",", "?", "!", ";", ":", "'s", "'", "n't", ")"}


def render_reference(indices: Sequence[int], objects: Sequence[str]) -> str:
    names = [f"{objects[i]}{i}" for i in indices]
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def render_tokens(tokens: Sequence[Any], objects: Sequence[str]) -> str:
    """["Is", [0, 1], "happy", "?"] with objects ["person", "dog"] -> "Is person0 and dog1 happy?"."""
    words: List[str] = []
    for tok in tokens:
        word = render_reference(tok, objects) if isinstance(tok, list) else str(tok)
        if words and word in _NO_SPACE_BEFORE:
            words[-1] += word
        else:
            words.append(word)
    return " ".join(words)


def bad_references(tokens: Any, n_objects: int) -> List[str]:
    """What is wrong with a token list: non-list, bad tokens, references out of range."""
    if not isinstance(tokens, list):
        return ["expected a token list"]
    out = []
    for k, tok in enumerate(tokens):
        if isinstance(tok, list):
            for i in tok:
                if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n_objects:
                    out.append(f"token {k}: object reference {i!r} out of range (objects has {n_objects})")
        elif not isinstance(tok, str):
            out.append(f"token {k}: expected a string or a list of object indices")
    return out
