"""Expansion: a rough idea becomes a structured, visible, editable prompt (a PromptSpec).

Two expanders produce a PromptSpec:
  TemplateExpander  deterministic, offline: style presets + lighting/composition/quality
                    vocabularies + default negatives (prompts/styles/*.json, prompts/vocab.json).
  LLMExpander       any LangChain chat model with structured output validated against
                    PromptSpec; a malformed answer gets one repair attempt, then LLMError.
`expand_idea(idea, settings, ...)` is the one entry point front ends call: it checks the idea,
picks the expander (the LLM when one is configured, else the template), falls back as
configured, and renders the spec for the target model family.
"""
from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import prompts
from agent.config import Settings
from agent.errors import ConfigError, InvalidInput, LLMError
from agent.render import check_family, guess_family, render
from agent.schemas import MAX_LIST_ITEMS, Expansion, PromptSpec
from agent.spec_checks import drop_conflicts, drop_junk_items, problem_fields, without_fields
from tools.generate import check_text
from tools.limits import IDEA_CHARS, IDEA_WORDS

SYSTEM_PROMPT_FILE = "expand_system.md"
EXAMPLE_FILE = "expand_example.json"  # one worked example, sent as a prior exchange (small models follow it)
# The worked example's forms, cheapest first. "compact": a long idea kept whole in the subject, sent as JSON
# without spaces (a model copying the form writes about 15% fewer tokens). A local server's model gets the
# first form whose test ideas it answers cleanly (`example_form`, probed once and cached); the last form,
# "default", needs no probe. Measured: SmolLM2-135M about 25% faster with compact at the same validity;
# Gemma-3-270M copies the compact example's fields into most answers, so it keeps the default.
EXAMPLE_FORMS = {"compact": "expand_example_compact.json", "default": EXAMPLE_FILE}
EXAMPLE_PROBES = ("three green apples in a glass bowl on a kitchen table", "a lighthouse on a cliff at dusk")
# how to write the fields for each family (worded so that a small model copying it does no harm)
FAMILY_HINTS = {
    "demo": "the idea's exact words as the subject (a tiny demo model reads only captions like 'two red circles')",
    "sd": "short comma-separated tags",
    "sdxl": "short natural phrases",
    "flux": "short natural phrases (negatives are ignored)",
    "openai": "short natural phrases",
}


# -- input checks ------------------------------------------------------------------------------
def check_idea(idea: str | None) -> str:
    """The idea with whitespace normalised, or InvalidInput saying what to do."""
    text = " ".join(check_text(str(idea or ""), "The idea").split())
    if not text:
        raise InvalidInput("The idea is empty.", 'Describe what to draw, e.g. "a cat coding at night".', param="idea")
    words = len(text.split())
    if words > IDEA_WORDS or len(text) > IDEA_CHARS:
        raise InvalidInput(f"The idea is {words} words ({len(text)} characters); expansion takes at most "
                           f"{IDEA_WORDS} words / {IDEA_CHARS} characters.",
                           "Shorten it to what matters (the text encoder reads about 60 words), or generate "
                           "a finished prompt as written (the generate action, or run with raw).", param="idea")
    return text


# -- data: style presets and vocabularies -------------------------------------------------------
@dataclass(frozen=True)
class Style:
    name: str
    description: str
    positive: str   # template with {prompt}
    negative: str

    def parts(self) -> tuple[str, list[str]]:
        """(the style phrase around {prompt}, the preset's other phrases)."""
        phrases = [p.strip() for p in self.positive.split(",") if p.strip()]
        head, rest = "", []
        for phrase in phrases:
            if "{prompt}" in phrase and not head:
                head = re.sub(r"\s+(of|depicting)$", "", phrase.replace("{prompt}", " ").strip())
                head = " ".join(head.split())
            else:
                rest.append(phrase)
        return head, rest


def _style_files(home=None) -> dict[str, Path]:
    files: dict[str, Path] = {}
    packaged = Path(str(resources.files(prompts).joinpath("styles")))
    user = prompts.user_dir(home)
    for folder in (packaged, user / "styles" if user else None):  # user presets override packaged ones
        if folder is not None and folder.is_dir():
            for f in sorted(folder.glob("*.json")):
                files[f.stem.lower()] = f
    return files


def load_styles(home=None) -> dict[str, Style]:
    """All style presets by name (packaged, then the user's HOME/prompts/styles/*.json; `home`: the
    settings' home, Settings.home)."""
    styles: dict[str, Style] = {}
    for key, f in _style_files(home).items():
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
            style = Style(name=str(data.get("name") or key).lower(), description=str(data.get("description", "")),
                          positive=str(data["positive"]), negative=str(data.get("negative", "")))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"Style preset {f} is not valid ({type(exc).__name__}: {exc}).",
                              'A preset is a JSON object with "name", "description", "positive" '
                              '(containing {prompt}) and "negative".') from None
        if "{prompt}" not in style.positive:
            raise ConfigError(f"Style preset {f} has no {{prompt}} in its positive template.",
                              'Add {prompt} where the subject goes, e.g. "watercolor painting of {prompt}".')
        styles[style.name] = style
    return dict(sorted(styles.items()))


def get_style(name: str, styles: dict[str, Style] | None = None, *, home=None) -> Style:
    styles = load_styles(home) if styles is None else styles
    key = (name or "").strip().lower()
    if key in styles:
        return styles[key]
    close = difflib.get_close_matches(key, list(styles), n=3, cutoff=0.6)
    hint = f"Did you mean {' or '.join(close)}? " if close else ""
    raise InvalidInput(f"Unknown style '{name}'.", f"{hint}`imagent styles` lists the {len(styles)} presets.")


def load_vocab(home=None) -> dict:
    name = "vocab.json"
    try:
        return json.loads(prompts.read_text(name, home))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{prompts.path_of(name, home)} is not valid JSON ({exc}).",
                          "Fix it, or delete your override in $IMAGENT_HOME/prompts/.") from None


# -- expanders ------------------------------------------------------------------------------------
class TemplateExpander:
    """Deterministic expansion: same idea and style, same PromptSpec. Needs no model."""

    name = "template"

    def __init__(self, vocab: dict | None = None, *, home=None):
        self.vocab = vocab if vocab is not None else load_vocab(home)

    def expand(self, idea: str, style: Style | None = None, family: str | None = None) -> PromptSpec:
        subject = idea.strip().rstrip(".").strip()
        words = set(re.findall(r"[a-z0-9]+", subject.lower()))
        quality = list(self.vocab.get("quality", []))
        extras: list[str] = []
        style_text = ""
        negatives: list[str] = []
        if style is not None:
            style_text, rest = style.parts()
            extras = [p for p in rest if p.lower() not in {q.lower() for q in quality}]
            negatives = [p.strip() for p in style.negative.split(",") if p.strip()]
        negatives += list(self.vocab.get("negatives", []))
        return PromptSpec(subject=subject, style=style_text,
                          lighting=self._pick("lighting", words), composition=self._pick("composition", words),
                          quality=quality[:MAX_LIST_ITEMS], negatives=_dedupe(negatives)[:MAX_LIST_ITEMS],
                          extras=_dedupe(extras)[:MAX_LIST_ITEMS])

    def _pick(self, kind: str, words: set[str]) -> str:
        table = self.vocab.get(kind, {})
        for rule in table.get("rules", []):
            if words & {k.lower() for k in rule.get("keywords", [])}:
                return rule["value"]
        return table.get("default", "")


class LLMExpander:
    """Expansion by a LangChain chat model with structured output validated against PromptSpec."""

    def __init__(self, chat_model, *, system_prompt: str | None = None, method: str | None = None,
                 name: str | None = None, home=None, example_form: str = "default"):
        self.chat_model = chat_model
        self.home = home
        self.example_form = example_form if example_form in EXAMPLE_FORMS else "default"
        self.system_prompt = system_prompt if system_prompt is not None else prompts.read_text(SYSTEM_PROMPT_FILE, home)
        self.method = method
        self._runnable = None
        self._example: dict | None = None
        self.warnings: list[str] = []  # what the last expand() left out of the model's answer
        self.name = f"llm:{name or getattr(chat_model, 'model_name', None) or type(chat_model).__name__}"

    def messages(self, idea: str, style: Style | None, family: str | None) -> list:
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

        lines = [f"Idea: {idea}"]
        hint = [f"Write {FAMILY_HINTS.get(family, family)}."] if family else []
        example = self.example()  # asked in the same words as the real request: small models copy the form
        separators = (",", ":") if self.example_form == "compact" else None
        shots = ([HumanMessage("\n".join([f"Idea: {example['idea']}", *hint])),
                  AIMessage(json.dumps(example["answer"], separators=separators))] if example else [])
        if style is not None:
            lines.append(f"Style preset '{style.name}': {style.positive.replace('{prompt}', '<subject>')} "
                         f"(avoid: {style.negative})")
        lines += hint
        return [SystemMessage(self.system_prompt), *shots, HumanMessage("\n".join(lines))]

    def example(self) -> dict | None:
        """The worked example ({"idea", "answer"}) of this expander's form (EXAMPLE_FORMS), or None."""
        if self._example is None:
            try:
                data = json.loads(prompts.read_text(EXAMPLE_FORMS[self.example_form], self.home))
                self._example = data if isinstance(data, dict) and data.get("idea") and data.get("answer") else {}
            except (OSError, ValueError):
                self._example = {}
        return self._example or None

    def runnable(self):
        """The chat model bound to answer as a PromptSpec, built once per expander (a few ms of schema work)."""
        from agent.llm import bind_structured

        if self._runnable is None:
            self._runnable = bind_structured(self.chat_model, PromptSpec, self.method)
        return self._runnable

    def answer(self, messages, idea: str, family: str | None, *, check_subject: bool = True):
        """One call: (the spec without junk items, or None; its problems [(fields, phrase)]; what was wrong
        when there is no spec; the raw answer). Client errors (HTTP, timeouts) propagate."""
        from agent.llm import short_error, structured_call

        try:
            spec, problem, raw_text = structured_call(self.runnable(), PromptSpec, messages)
        except (ValueError, TypeError) as exc:  # malformed JSON / schema mismatch raised by the client
            return None, [], short_error(exc), ""
        if spec is None:
            return None, [], problem, raw_text
        spec = drop_junk_items(spec)
        found = problem_fields(spec, idea, self.instructions(family), check_subject=check_subject,
                               example=self.example())
        return spec, found, "", raw_text

    def first_answer_problem(self, idea: str, family: str | None = None) -> str:
        """What is wrong with the model's first answer for `idea`, "" when nothing: one call, no repair,
        the subject always checked. Client errors propagate."""
        spec, found, problem, _ = self.answer(self.messages(idea, None, family), idea, family)
        return problem if spec is None else "; ".join(text for _, text in found)

    def instructions(self, family: str | None) -> str:
        """The text of the request that is not the idea, the style preset or a quoted example (a
        field copying it is junk): the system prompt, the family hint, the schema's descriptions."""
        fields = " ".join(f.description or "" for f in PromptSpec.model_fields.values())
        text = "\n".join((self.system_prompt, FAMILY_HINTS.get(family, family or "") if family else "", fields))
        return re.sub(r"\"[^\"\n]*\"|(?<![A-Za-z])'[^'\n]*'(?![A-Za-z])", " ", text)

    def expand(self, idea: str, style: Style | None = None, family: str | None = None) -> PromptSpec:
        """A validated PromptSpec; one repair round for a malformed answer, then LLMError.
        Client errors (timeouts, HTTP) propagate unchanged; `agent.llm.llm_error` explains them."""
        from langchain_core.messages import AIMessage, HumanMessage

        self.warnings = []
        messages = self.messages(idea, style, family)
        problem = ""
        for attempt in range(2):
            spec, found, problem, raw_text = self.answer(messages, idea, family, check_subject=family != "demo")
            if spec is not None:
                if not found:
                    return spec
                fields = {f for names, _ in found for f in names}
                if attempt == 1 and "subject" not in fields:
                    # the subject holds after the repair: keep the answer without the fields still wrong
                    self.warnings.append(f"The LLM's {', '.join(sorted(fields))} left out ("
                                         f"{'; '.join(t for _, t in found)}).")
                    return without_fields(spec, fields)
                if attempt == 1 and family != "demo":
                    # the subject still drops the idea's words after the repair (small models cut long
                    # ideas short): the idea's own words are the subject, as the prompt asks, and the
                    # model's other fields stay where they passed; with none left, the template
                    kept = without_fields(spec, fields).model_copy(update={"subject": " ".join(idea.split())})
                    if kept.style or kept.lighting or kept.composition:
                        self.warnings.append(f"The LLM's subject was replaced by the idea's own words "
                                             f"({'; '.join(t for _, t in found)}).")
                        return kept
                spec, problem = None, "; ".join(t for _, t in found)
            messages = messages + [
                AIMessage(raw_text[:2000] or "(no usable answer)"),
                HumanMessage(f"That answer could not be used: {problem}. Reply again with only the JSON "
                             "object, with every key present, the idea's own words in 'subject', and the other "
                             "fields in your own short words about this idea."),
            ]
        raise LLMError(f"The LLM did not return a usable structured prompt, even after one repair attempt "
                       f"({problem}).",
                       "Try another model or IMAGENT_LLM_METHOD (`imagent llm check` lists what works); or "
                       "expand offline with IMAGENT_LLM_FALLBACK=template (the default).")


def probe_example_form(settings: Settings, chat_model, method: str | None, family: str | None = "sd") -> dict:
    """{"form", "note", "seconds"}: the first of EXAMPLE_FORMS whose EXAMPLE_PROBES the model answers
    cleanly at the first try (it stops at the first unclean answer; the last form is not probed).
    Client errors propagate, and nothing is cached then."""
    import time

    t0, forms, note = time.perf_counter(), list(EXAMPLE_FORMS), ""
    for form in forms[:-1]:
        lx = LLMExpander(chat_model, method=method, home=settings.home, example_form=form)
        problem = next(((idea, p) for idea in EXAMPLE_PROBES if (p := lx.first_answer_problem(idea, family))), None)
        if problem is None:
            return {"form": form, "seconds": round(time.perf_counter() - t0, 2),
                    "note": f"the {len(EXAMPLE_PROBES)} test ideas answered cleanly with the {form} example"}
        note += f"{form}: {problem[0]!r}: {problem[1][:160]}; "
    return {"form": forms[-1], "seconds": round(time.perf_counter() - t0, 2), "note": note.rstrip("; ")}


def example_form(settings: Settings, chat_model, method: str | None, family: str | None) -> str:
    """The worked example's form for `settings`' LLM: "default" for OpenAI's own API (no probe for a
    large model); for a local server the probed form, found once and cached with the server's other
    findings (agent.llm_probe). IMAGENT_LLM_EXAMPLE (compact or default) skips the probe."""
    if settings.llm_example != "auto":
        return settings.llm_example
    if not settings.llm_base_url:
        return "default"
    from agent.llm_probe import finding

    found = finding(settings, "example",
                    lambda: probe_example_form(settings, chat_model, method, family if family != "demo" else "sd"))
    return found["form"] if found.get("form") in EXAMPLE_FORMS else "default"


def _dedupe(items: list[str]) -> list[str]:
    seen, out = set(), []
    for item in items:
        if item.lower() not in seen:
            seen.add(item.lower())
            out.append(item)
    return out


# -- the one entry point -------------------------------------------------------------------------
def expand_idea(idea: str, settings: Settings, *, style: str | None = None, family: str | None = None,
                chat_model=None, llm: str | None = None, use_llm: bool | None = None,
                negative: str = "") -> Expansion:
    """idea -> Expansion(spec, rendered positive/negative, expander, warnings).

    The LLM is used when `chat_model` is given, or `llm`/`settings.llm_model` names one (unless
    `use_llm` is False); otherwise the template expander. When the LLM fails, `settings.llm_fallback`
    decides: "template" expands offline and adds a warning; "error" raises LLMError.
    `negative` (the user's own negative prompt) is added to the spec's negatives.
    """
    text = check_idea(idea)
    family = check_family(family) if family else guess_family(settings.model, settings.backends[0])
    style_name = style or settings.style
    preset = get_style(style_name, home=settings.home) if style_name else None
    warnings: list[str] = []
    want_llm = use_llm if use_llm is not None else bool(chat_model is not None or llm or settings.llm_model)
    spec, expander = None, "template"
    if want_llm:
        from agent.llm import build_chat_model, llm_error

        try:
            from agent.llm_probe import resolve_method

            model = chat_model if chat_model is not None else build_chat_model(settings, model=llm)
            probed = settings.with_overrides(llm_model=llm)  # a model given in the call has its own findings
            method = resolve_method(probed) if chat_model is None else None
            form = example_form(probed, model, method, family) if chat_model is None else "default"
            lx = LLMExpander(model, method=method, name=llm or settings.llm_model, home=settings.home,
                             example_form=form)
            spec, expander = lx.expand(text, preset, family), lx.name
            warnings += lx.warnings
        except (KeyboardInterrupt, InvalidInput, ConfigError):
            raise
        except Exception as exc:  # any client failure becomes an LLMError with a next step
            error = llm_error(exc, settings, llm)
            again = ""
            if chat_model is None and settings.llm_method == "auto" and "refused the request" in error.message:
                from agent.llm_probe import forget

                forget(settings.with_overrides(llm_model=llm))  # the cached method stopped working
                again = " The server's methods are probed again next time."
            if settings.llm_fallback != "template":
                raise error from None
            warnings.append(f"LLM expansion failed: {error.message} Used the offline template expander instead."
                            + again)
    if spec is None:
        spec = TemplateExpander(home=settings.home).expand(text, preset, family)
    if family == "demo" and spec.subject != text.rstrip("."):
        # the demo model only understands its caption grammar: the idea must reach it verbatim
        spec = spec.model_copy(update={"subject": text.rstrip(".")})
    spec = drop_conflicts(spec, text)
    extra_neg = [p.strip() for p in (negative or "").split(",") if p.strip()]
    if extra_neg:  # the user's own negatives always count
        spec = spec.model_copy(update={"negatives": _dedupe(spec.negatives + extra_neg)})
    return Expansion(idea=text, spec=spec, rendered=render(spec, family), expander=expander,
                     style_preset=preset.name if preset else None, warnings=warnings)
