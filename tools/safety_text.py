"""Prompt text normalisation: the words the safety blocklist and prompt classifier read.

`normalize_tokens(text)` runs, once per prompt: NFKC, zero-width and format characters dropped,
look-alike letters of other scripts mapped to Latin (Unicode confusables from the package
`confusable-homoglyphs`, plus a small table of lower-case Cyrillic/Greek forms it lacks), casefold,
accents and combining marks stripped, leetspeak inside words read as letters, runs of
spaced/dotted/dashed single letters joined. Used by `tools.safety_prompt`; the checker is `tools.safety`.
"""
from __future__ import annotations

import re


# -- text normalisation ---------------------------------------------------------------------------
# Every prompt is normalised once (normalize() / Normalized) before the blocklist and the classifier see
# it, so rewrites of a blocked prompt meet the same terms as the plain prompt:
#   NFKC (full-width letters, ligatures, super/subscripts) -> drop zero-width and other format characters
#   -> look-alike letters from other scripts mapped to Latin (Unicode's confusables, as shipped by the
#   PyPI package confusable-homoglyphs, plus _EXTRA_CONFUSABLES for the lower-case Cyrillic/Greek forms
#   that list lacks) -> casefold -> accents and other combining marks stripped (desnudó -> desnudo)
#   -> apostrophes inside words dropped (kid's -> kids) -> words: runs of letters and digits, anything
#   else separates -> runs of two or more single letters joined (n u d e, n.u.d.e -> nude)
#   -> leetspeak inside words (p0rn, pr0n, @ss -> porn, pron, ass; a number alone stays a number).
_EXTRA_CONFUSABLES = {  # lower-case look-alikes that Unicode's confusables.txt does not list
    "к": "k", "м": "m", "н": "h", "т": "t", "в": "b", "п": "n", "и": "n", "ь": "b", "я": "r",
    "з": "3", "ш": "w", "ц": "u", "л": "n", "д": "d",
    "ω": "w", "τ": "t", "κ": "k", "ε": "e", "χ": "x", "β": "b", "γ": "y", "μ": "u", "σ": "o",
    "ς": "c", "λ": "a", "ϲ": "c",
}
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g",
                       "@": "a", "$": "s", "€": "e", "!": "i", "|": "i"})
_TOKEN = re.compile(r"[a-z0-9@$€]+(?:[!|][a-z0-9@$€]+)*")  # '!' and '|' count only inside a word
_APOSTROPHES = re.compile(r"(?<=\w)['’`´ʼ](?=\w)")
_confusables: dict[str, str] | None = None


def _confusable_map() -> dict[str, str]:
    """Non-ASCII character -> the ASCII letter or digit it imitates (built once)."""
    global _confusables
    if _confusables is None:
        import string
        import unicodedata

        from confusable_homoglyphs.confusables import confusables_data

        alnum = set(string.ascii_letters + string.digits)
        table: dict[str, str] = {}
        for ch, glyphs in confusables_data.items():  # a character and what it can be mistaken for
            if len(ch) == 1 and ch not in alnum:
                for g in glyphs:
                    base = "".join(c for c in unicodedata.normalize("NFKD", g["c"]) if not unicodedata.combining(c))
                    if len(base) == 1 and base in alnum:
                        table[ch] = base
                        break
        for letter in alnum:  # and the reverse direction: what can be mistaken for an ASCII letter
            for g in confusables_data.get(letter, []):
                if len(g["c"]) == 1 and g["c"] not in alnum:
                    table.setdefault(g["c"], letter)
        table.update(_EXTRA_CONFUSABLES)
        _confusables = table
    return _confusables


def _map_confusables(text: str) -> str:
    table = _confusable_map()
    return "".join(ch if ch.isascii() else table.get(ch, ch) for ch in text)


def normalize_tokens(text: str) -> list[str]:
    """The normalised words of `text` (see the comment above); the blocklist and classifier read these."""
    return _normalize(text)[0]


def _normalize(text: str) -> tuple[list[str], list[str]]:
    """(words, the words that were joined from runs of single letters)."""
    import unicodedata

    t = unicodedata.normalize("NFKC", text)
    t = "".join(ch for ch in t if unicodedata.category(ch) != "Cf")  # zero-width, soft hyphen, bidi marks
    t = _map_confusables(t).casefold()
    t = _map_confusables(t)  # forms that only appear after case folding
    t = "".join(ch for ch in unicodedata.normalize("NFKD", t) if not unicodedata.combining(ch))
    t = _APOSTROPHES.sub("", t)
    raw = _TOKEN.findall(t)
    toks: list[str] = []
    runs: list[str] = []
    i = 0
    while i < len(raw):  # join runs of single characters: s e x, s.e.x, s-e-x -> sex
        j = i
        while j < len(raw) and len(raw[j]) == 1:
            j += 1
        if j - i >= 2:
            run = "".join(raw[i:j])
            run = run if run.isdigit() else run.translate(_LEET)
            toks.append(run)
            runs.append(run)
            i = j
        else:
            toks.append(raw[i] if raw[i].isdigit() else raw[i].translate(_LEET))
            i += 1
    return toks, runs


def words(text: str) -> list[str]:
    """Normalised lower-case words (kept name: the classifier and blocklist use it)."""
    return normalize_tokens(text)


def normalize(text: str) -> str:
    """The normalised text: normalised words joined by single spaces."""
    return " ".join(normalize_tokens(text))
