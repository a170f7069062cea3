"""Final-answer extraction from the formats models actually write, and light number normalisation.

Extraction order in :func:`extract_final_answer` (first hit wins):

1. the last ``\\boxed{...}`` / ``\\fbox{...}`` (MATH, most instruction-tuned models);
2. the last GSM8K-style ``#### x`` line;
3. the last "The answer is x" / "The final answer is x" / "Answer: x" phrase (Minerva, chatty models).

Extraction only locates the answer; deciding whether two answers are equal lives in
:mod:`fpa.tasks.equivalence`.

Words after a number (:func:`normalize_number`): scale words (hundred, thousand, million,
billion, trillion, dozen) are part of the number (``10 million`` is 10000000, ``2 dozen`` is 24);
known units (:data:`UNIT_WORDS`: lengths, masses, volumes, times, money, percent, ...) are
dropped; any other words are kept, so ``3 or more`` is not the number 3
(:func:`number_with_words` tells the equivalence check so).
"""

from __future__ import annotations

import re
from fractions import Fraction

_BOX_START = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_GSM8K = re.compile(r"^[ \t]*####[ \t]*(.*?)[ \t]*$", re.MULTILINE)
_ANSWER_IS = re.compile(r"\b(?:final\s+)?answer(?:\s+is|\s*:)\s*:?", re.IGNORECASE)
# A period followed by whitespace ends the sentence; a period between digits (3.5) does not.
_SENTENCE_END = re.compile(r"\.(?=\s)")
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d*)?$")
_NUMBER_HEAD = re.compile(r"^[+-]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:/\d+)?")

# Words that multiply the number before them.
SCALE_WORDS: dict[str, int] = {"hundred": 100, "thousand": 1_000, "million": 10**6, "billion": 10**9,
                               "trillion": 10**12, "dozen": 12}
# Units dropped after a number (compared lower-case; a plural in -s / -es is accepted too). Single
# letters are never units here ("3 x" may be the expression 3x; "5 m" stays as written).
UNIT_WORDS = frozenset("""
    mm cm km meter metre centimeter centimetre millimeter millimetre kilometer kilometre
    inch foot feet ft yard yd mile mi square sq cubic cu
    mg kg gram kilogram milligram lb lbs pound ounce oz ton tonne
    ml liter litre milliliter millilitre gallon gal quart qt pint cup tablespoon tbsp teaspoon tsp
    second sec minute min hour hr day week month year yr decade century centuries
    mph kph km/h m/s per
    dollar cent euro yen rupee usd
    degree deg radian rad percent unit calorie kcal kb mb gb tb
""".split())
# \text{ cm} and friends become plain words; LaTeX spaces (\, \; \! \  ~) and a ^2 / ^3 on a unit go.
_TEXT_GROUP = re.compile(r"\\(?:text|mbox|mathrm)\{([^{}]*)\}")
_TEX_SPACE = re.compile(r"\\[,;! ]|~")
_UNIT_POWER = re.compile(r"(?<=[A-Za-z}])\^\{?[23]\}?")
# After normalisation: a number followed by words (or a \text group) that normalize_number kept.
_NUMBER_WITH_WORDS = re.compile(_NUMBER_HEAD.pattern + r"(?:\s|\\[,;! ]|~)*(?:[A-Za-z]{2,}|\\(?:text|mbox|mathrm)\{)")


def _is_unit(word: str) -> bool:
    w = word.lower()
    return w in UNIT_WORDS or (w.endswith("s") and w[:-1] in UNIT_WORDS) or (
        w.endswith("es") and w[:-2] in UNIT_WORDS)


def _head_value(head: str) -> Fraction | None:
    """The number at the start of an answer as a Fraction; None for ``1,2`` (maybe a tuple) or ``3/0``."""
    if "," in head:
        if not _THOUSANDS.match(head):
            return None
        head = head.replace(",", "")
    try:
        return Fraction(head)
    except (ValueError, ZeroDivisionError):
        return None


def _words_after_number(s: str, head_end: int) -> str | None:
    """``s`` with the scale words and known units after its leading number applied / dropped.

    None when what follows the number is not (scale words, then) known units only, or when it
    does not start with a space or a ``\\text`` group ("5cm", "3x", "50%" are left alone).
    """
    tail = s[head_end:]
    if not tail or not (tail[0].isspace() or tail.startswith("\\") or tail[0] == "~"):
        return None
    tail = _TEXT_GROUP.sub(lambda m: f" {m.group(1)} ", _UNIT_POWER.sub("", tail))
    words = _TEX_SPACE.sub(" ", tail).split()
    if words and words[-1].endswith(".") and len(words[-1]) > 1:  # "18 dollars."
        words[-1] = words[-1][:-1]
    scale = 1
    while words and words[0].lower() in SCALE_WORDS:
        scale *= SCALE_WORDS[words.pop(0).lower()]
    if not all(_is_unit(w) for w in words):
        return None
    head = s[:head_end]
    if scale == 1:
        return head
    value = _head_value(head)
    if value is None:
        return None
    value *= scale
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


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
    (``$``, ``\\$``); turn LaTeX ``{,}`` into ``,``; after a number, multiply in scale words
    (``10 million`` -> ``10000000``, ``2 dozen`` -> ``24``) and drop known units (``\\text{ cm}``,
    ``5 cm``, ``18 dollars``, ``60 miles per hour``; see :data:`UNIT_WORDS`), but only when
    nothing else follows (``3 or more`` stays as written; single letters are kept since ``3 x`` may
    mean 3x); drop a trailing ``%`` / ``\\%`` (50% is read as 50, the convention of GSM8K and MATH gold
    answers); drop a trailing period; remove thousands separators only when they group digits in threes
    (``1,000`` -> ``1000``; ``1,2`` stays, it may be a tuple).
    """
    s = s.strip()
    if len(s) >= 2 and s.startswith("$") and s.endswith("$"):
        s = s.strip("$").strip()
    s = s.replace("{,}", ",")
    s = re.sub(r"^([+-]?)\\?\$\s*", r"\1", s)  # currency sign
    head = _NUMBER_HEAD.match(s)
    if head and head.end() < len(s):
        s = _words_after_number(s, head.end()) or s
    s = re.sub(r"\\?%$", "", s).strip()
    if s.endswith(".") and not s.endswith(".."):
        s = s[:-1].rstrip()
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    return s


def number_with_words(s: str) -> bool:
    """Is ``s`` a number followed by words that are neither scale words nor known units ("3 or more")?

    Such an answer says more than the number, so it must not equal a bare number.
    """
    return bool(_NUMBER_WITH_WORDS.match(normalize_number(s)))
