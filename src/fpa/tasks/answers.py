"""Final-answer extraction from the formats models actually write, and light number normalisation.

Extraction order in :func:`extract_final_answer` (first hit wins):

1. the last ``\\boxed{...}`` / ``\\fbox{...}`` (MATH, most instruction-tuned models);
2. the last GSM8K-style ``#### x`` line;
3. the last "The answer is x" / "The final answer is x" / "Answer: x" phrase (Minerva, chatty models).

Extraction only locates the answer; deciding whether two answers are equal lives in
:mod:`fpa.tasks.equivalence`.
"""

from __future__ import annotations

import re

_BOX_START = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_GSM8K = re.compile(r"^[ \t]*####[ \t]*(.*?)[ \t]*$", re.MULTILINE)
_ANSWER_IS = re.compile(r"\b(?:final\s+)?answer(?:\s+is|\s*:)\s*:?", re.IGNORECASE)
# A period followed by whitespace ends the sentence; a period between digits (3.5) does not.
_SENTENCE_END = re.compile(r"\.(?=\s)")
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d*)?$")
# A trailing unit: "\text{ cm}", "\mbox{cm}", or whitespace-separated words ("5 cm", "18 dollars").
# Single letters are kept ("3 x" may be the expression 3x), so a unit word needs two letters.
_UNIT_SUFFIX = re.compile(r"(?:\s*\\(?:text|mbox|mathrm)\{[^{}]*\}|\s+[A-Za-z]{2,}\.?)+$")
_NUMBER_HEAD = re.compile(r"^[+-]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:/\d+)?")


def _brace_group(text: str, start: int) -> tuple[str, int] | None:
    """Content of the ``{...}`` opening at ``text[start]`` and the index after its ``}``.

    Counts braces rather than using a regex so nested groups (``\\frac{\\sqrt{2}}{2}``) survive;
    escaped braces ``\\{`` ``\\}`` (set notation) are content, not structure. None if unclosed.
    """
    depth, i = 0, start
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:i], i + 1
        i += 1
    return None


def _box_content(text: str, pos: int) -> str | None:
    """Content of the box command whose backslash is at ``pos``; None if malformed."""
    m = _BOX_START.match(text, pos)
    if m is None:
        return None
    i = m.end()
    while i < len(text) and text[i] in " \t":
        i += 1
    if i < len(text) and text[i] == "{":
        group = _brace_group(text, i)
        return None if group is None else group[0]
    if i == m.end():  # "\boxedx" is another macro, not a box
        return None
    # "\boxed 5": TeX takes a single token; models mean the run up to whitespace or "$".
    tail = re.match(r"[^\s$]+", text[i:])
    return tail.group(0) if tail else None


def extract_boxed(text: str) -> str | None:
    """Content of the last well-formed ``\\boxed{...}`` / ``\\fbox{...}`` (stripped), else None.

    "Last" is by starting position, so in ``\\boxed{\\boxed{5}}`` the inner ``5`` wins. A box left
    unclosed (a truncated generation) is skipped. An empty last box (``\\boxed{ }``) gives None: the
    model boxed nothing, so there is no answer.
    """
    starts = [m.start() for m in _BOX_START.finditer(text)]
    for pos in reversed(starts):
        content = _box_content(text, pos)
        if content is not None:
            content = content.strip()
            return content or None
    return None


def _strip_delimiters(s: str) -> str:
    """Drop surrounding math delimiters, markdown bold and a sentence-final period."""
    s = s.strip().strip("*").strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
            s = s[len(left):len(s) - len(right)].strip()
            break
    if s.endswith(".") and not s.endswith(".."):
        s = s[:-1].rstrip()
    return s.strip("$").strip()  # stray "$" from a half-delimited "$42" or "42$"


def extract_final_answer(text: str) -> str | None:
    """The completion's final answer as a string, or None if it states none (see module docstring)."""
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed
    finals = _GSM8K.findall(text)
    if finals:
        answer = _strip_delimiters(finals[-1])
        return answer or None
    phrases = list(_ANSWER_IS.finditer(text))
    if phrases:
        rest = text[phrases[-1].end():].split("\n", 1)[0]
        rest = _SENTENCE_END.split(rest, maxsplit=1)[0]
        answer = _strip_delimiters(rest)
        return answer or None
    return None


def normalize_number(s: str) -> str:
    """Normalise how a number is written, leaving anything that is not a number mostly alone.

    Steps, in order: strip whitespace and surrounding ``$`` delimiters; drop a currency sign
    (``$``, ``\\$``); turn LaTeX ``{,}`` into ``,``; drop a trailing unit after a number
    (``\\text{ cm}``, ``5 cm``, ``18 dollars``; single letters are kept since ``3 x`` may mean 3x);
    drop a trailing ``%`` / ``\\%`` (50% is read as 50, the convention of GSM8K and MATH gold
    answers); drop a trailing period; remove thousands separators only when they group digits in threes
    (``1,000`` -> ``1000``; ``1,2`` stays, it may be a tuple).
    """
    s = s.strip()
    if len(s) >= 2 and s.startswith("$") and s.endswith("$"):
        s = s.strip("$").strip()
    s = s.replace("{,}", ",")
    s = re.sub(r"^([+-]?)\\?\$\s*", r"\1", s)  # currency sign
    head = _NUMBER_HEAD.match(s)
    if head and head.end() < len(s) and _UNIT_SUFFIX.fullmatch(s[head.end():]):
        s = s[:head.end()]
    s = re.sub(r"\\?%$", "", s).strip()
    if s.endswith(".") and not s.endswith(".."):
        s = s[:-1].rstrip()
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    return s
