"""The two offline prompt checks, the blocklist and the naive-Bayes classifier, with their data files.

  1. the blocklist `prompts/safety/blocklist.json`: categories (sexual, minors, violence, hate,
     self-harm, drugs) with `standard` terms and extra `strict` terms, plus combinations (a minor
     together with sexual or nude words is blocked as `minors` at every level but off);
  2. a small offline text classifier: multinomial naive Bayes over words and word pairs, trained
     by `train_prompt_classifier()` from the labelled list `prompts/safety/classifier_train.tsv`,
     weights in `prompts/safety/classifier.json` (retrain: `python -m tools.safety train`). It
     blocks when P(unsafe) reaches the level's threshold.
Both read only the normalised words of `tools.safety_text`.
Blocklist terms match whole normalised words or phrases, and also with the separators removed: a
term of three letters or more matches adjacent words that concatenate to it ('nu de', 'se x act';
never across a short function word, so 'a pen is' is not 'penis'; prefix terms only with a known
ending), and anywhere inside a word joined from spaced single letters. A term never matches inside
an ordinary word ('Scunthorpe', 'therapist', 'grape' pass). Terms cover English, Spanish, French,
German, Italian and Portuguese, and common euphemisms.
Both data files can be overridden by files of the same name in `HOME/prompts/safety/` (HOME: the
settings' home, $IMAGENT_HOME or ~/.imagent, passed in as `home`).
"""
from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path

from tools.errors import InvalidInput
from tools.safety_text import _normalize, words


# -- blocklist ------------------------------------------------------------------------------------
def _data_path(name: str, home=None) -> Path:
    from prompts import path_of  # data package; resolves the overrides in HOME/prompts

    return path_of(f"safety/{name}", home)


# Words that never count as a fragment of a split word ("a pen is" is not "penis", "the rapist" is
# not "therapist"): short function words that stand on their own in ordinary prompts.
_STOPWORDS = frozenset("a an the is of on in at to and or as by it be with for his her its my are was he "
                       "she we me us our their this that up".split())
# Endings a prefix term (nud*) may take when its word was split ("nu dity"): without this list any
# continuation would count and "pen island" would read as penis*.
_SUFFIXES = ("", "s", "es", "e", "ed", "d", "ing", "er", "ers", "y", "ies", "ity", "ic", "ics", "ical", "al",
             "ation", "ations", "ion", "ions", "ment", "ments", "ous", "a", "as", "o", "os", "i", "en", "ie",
             "ia", "ias", "ismo", "ista", "ist", "ists", "isme", "itat", "ated", "ating", "ates", "ator", "ado", "ada", "ados",
             "adas", "ato", "ata", "ati", "ate", "ee", "iert", "ierte")
_MAX_SPAN = 6  # at most this many pieces make one split word


class _Term:
    __slots__ = ("words", "prefix", "text", "compact")

    def __init__(self, text: str):
        self.text = text
        self.prefix = text.endswith("*")
        self.words = words(text.rstrip("*"))
        self.compact = "".join(self.words)

    def found_in(self, toks: list[str]) -> bool:
        """Whole-word match of the term's words in the normalised words `toks`."""
        n = len(self.words)
        if n == 0:
            return False
        last = self.words[-1]
        for i in range(len(toks) - n + 1):
            if toks[i:i + n - 1] == self.words[:-1] and (
                    toks[i + n - 1].startswith(last) if self.prefix else toks[i + n - 1] == last):
                return True
        return False

    def found_split(self, spans: set[str]) -> bool:
        """Match with the separators removed: the term's letters spread over adjacent words ('nu de',
        'se x act', 'selfharm'). Only for terms of three letters or more, and the split word must
        start and end on word boundaries (so 'scunthorpe' never contains a term)."""
        if len(self.compact) < 3:
            return False
        if not self.prefix:
            return self.compact in spans
        return any(self.compact + s in spans for s in _SUFFIXES)

    def found_in_runs(self, runs: list[str]) -> bool:
        """Inside a word joined from spaced single letters ('a n a k e d c h i l d') the word
        boundaries are lost, so there a term of three letters or more matches anywhere."""
        return len(self.compact) >= 3 and any(self.compact in run for run in runs)


def split_spans(toks: list[str]) -> set[str]:
    """Concatenations of 2..6 adjacent words (no stop word among them), and each word alone."""
    spans = set(toks)
    for i in range(len(toks)):
        if toks[i] in _STOPWORDS:
            continue
        s = toks[i]
        for j in range(i + 1, min(len(toks), i + _MAX_SPAN)):
            if toks[j] in _STOPWORDS:
                break
            s += toks[j]
            spans.add(s)
    return spans


class Blocklist:
    """Categories of terms per level, and combinations of term groups. Loaded from JSON."""

    def __init__(self, data: dict, source: str = "<dict>"):
        self.source = source
        self.categories: dict[str, dict[str, list[_Term]]] = {}
        try:
            for cat, levels in data["categories"].items():
                self.categories[cat] = {lvl: [_Term(t) for t in levels.get(lvl, [])]
                                        for lvl in ("standard", "strict")}
            self.combinations = [
                {"category": c["category"], "levels": set(c.get("levels", ["standard", "strict"])),
                 "reason": c.get("reason", ""), "groups": [[_Term(t) for t in g] for g in c["all_of"]]}
                for c in data.get("combinations", [])]
        except (KeyError, TypeError, AttributeError) as exc:
            raise InvalidInput(f"The safety blocklist {source} is malformed ({type(exc).__name__}: {exc}).",
                               "Compare it with the packaged prompts/safety/blocklist.json.") from None

    @classmethod
    def load(cls, path: str | Path | None = None, *, home=None) -> "Blocklist":
        path = Path(path) if path else _data_path("blocklist.json", home)
        try:
            return cls(json.loads(path.read_text(encoding="utf-8")), str(path))
        except (OSError, json.JSONDecodeError) as exc:
            raise InvalidInput(f"The safety blocklist {path} cannot be read ({exc}).",
                               "Fix or delete the override in $IMAGENT_HOME/prompts/safety/.") from None

    def match(self, text: str, level: str) -> tuple[str, str] | None:
        """(category, reason) of the first match at `level`, or None."""
        toks, runs = _normalize(text)
        spans = split_spans(toks)

        def hit(term: _Term) -> bool:
            return term.found_in(toks) or term.found_split(spans) or term.found_in_runs(runs)

        active = ("standard",) if level == "standard" else ("standard", "strict")
        for combo in self.combinations:
            if level in combo["levels"]:
                hits = [next((t.text for t in g if hit(t)), None) for g in combo["groups"]]
                if all(hits):
                    return combo["category"], f"{combo['reason'] or 'blocked combination'} ({' + '.join(hits)})"
        for cat, by_level in self.categories.items():
            for lvl in active:
                for term in by_level[lvl]:
                    if hit(term):
                        return cat, f"the prompt contains '{term.text}' ({cat}, {lvl} list)"
        return None


# -- the offline prompt classifier ----------------------------------------------------------------
def features(text: str) -> list[str]:
    """Word unigrams plus adjacent word pairs ('a|b')."""
    toks = words(text)
    return toks + [f"{a}|{b}" for a, b in zip(toks, toks[1:])]


def read_examples(path: str | Path | None = None) -> list[tuple[str, str]]:
    """(label, text) pairs from a TSV file: LABEL<TAB>TEXT per line, '#' comments."""
    path = Path(path) if path else _data_path("classifier_train.tsv")
    examples = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        label, sep, text = line.partition("\t")
        if not sep or not text.strip():
            raise InvalidInput(f"{path}:{n} is not LABEL<TAB>TEXT.", "Use one tab between the label and the text.")
        examples.append((label.strip(), text.strip()))
    return examples


def train_prompt_classifier(examples: list[tuple[str, str]], alpha: float = 1.0) -> dict:
    """Train multinomial naive Bayes (Laplace smoothing `alpha`) on (label, text) pairs.

    Returns JSON-able weights: per label a log prior and log P(feature | label) for every feature
    of the vocabulary. Features never seen in training are ignored at prediction time, so an
    unfamiliar prompt falls back to the priors (which favour 'safe': most examples are safe).
    Deterministic: the same examples give the same weights.
    """
    if not examples:
        raise InvalidInput("No training examples for the prompt classifier.")
    counts: dict[str, Counter] = defaultdict(Counter)
    docs = Counter()
    for label, text in examples:
        docs[label] += 1
        counts[label].update(features(text))
    if "safe" not in docs:
        raise InvalidInput("The prompt classifier needs examples labelled 'safe'.")
    vocab = sorted(set().union(*counts.values()))
    total_docs = sum(docs.values())
    weights = {"format": "imagent-naive-bayes-v1", "alpha": alpha, "n_examples": total_docs,
               "labels": sorted(docs), "log_prior": {}, "log_likelihood": {}}
    for label in sorted(docs):
        c = counts[label]
        denom = sum(c.values()) + alpha * len(vocab)
        weights["log_prior"][label] = round(math.log(docs[label] / total_docs), 6)
        weights["log_likelihood"][label] = {f: round(math.log((c[f] + alpha) / denom), 6) for f in vocab}
    return weights


class PromptClassifier:
    """Naive-Bayes prompt classifier over `features()`; `predict(text) -> {label: probability}`."""

    def __init__(self, weights: dict):
        if weights.get("format") != "imagent-naive-bayes-v1":
            raise InvalidInput("The prompt classifier weights have an unknown format.",
                               "Retrain them: python -m tools.safety train")
        self.labels = list(weights["labels"])
        self.log_prior = weights["log_prior"]
        self.log_likelihood = weights["log_likelihood"]

    @classmethod
    def load(cls, path: str | Path | None = None, *, home=None) -> "PromptClassifier":
        path = Path(path) if path else _data_path("classifier.json", home)
        try:
            return cls(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise InvalidInput(f"The prompt classifier weights {path} cannot be read ({exc}).",
                               "Retrain them: python -m tools.safety train") from None

    def predict(self, text: str) -> dict[str, float]:
        feats = features(text)
        logp = {}
        for label in self.labels:
            table = self.log_likelihood[label]
            logp[label] = self.log_prior[label] + sum(table[f] for f in feats if f in table)
        top = max(logp.values())
        exp = {k: math.exp(v - top) for k, v in logp.items()}
        z = sum(exp.values())
        return {k: v / z for k, v in exp.items()}


def train(train_path: str | Path | None = None, out_path: str | Path | None = None) -> Path:
    """Train the prompt classifier from the TSV and write its weights as JSON (sorted, stable)."""
    weights = train_prompt_classifier(read_examples(train_path))
    out = Path(out_path) if out_path else Path(__file__).resolve().parent.parent / "prompts" / "safety" / "classifier.json"
    out.write_text(json.dumps(weights, sort_keys=True, separators=(",", ":")) + "\n", encoding="utf-8")
    return out
