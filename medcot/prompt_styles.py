"""How a model is prompted: the card's prompt, or, for a base model alone, the card's prompt after worked examples.

A fine-tune always gets the card's training prompt, byte for byte. The base alone wrote no reasoning with it (issue
16); shown two worked examples with ``<think>`` opened for it, it does. Examples, decoding and stop texts were chosen
by benchmarks/eval.py (figures in docs/eval/).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from medcot.config import GenerationParams

# The card's format starts the next case here (medcot.prompt.USER_TEMPLATE's head), which the base goes on to write.
CARD_STOP_TEXTS: tuple[str, ...] = ("### Question:",)
# The base also starts new cases in other shapes ("Patient: …", "Question: …", a bare "###" heading).
BASE_STOP_TEXTS: tuple[str, ...] = ("###", "Question:", "Patient:")
THINK_PREFILL = "<think>\n"


@dataclass(frozen=True)
class WorkedExample:
    question: str
    reasoning: str
    answer: str

    @property
    def reply(self) -> str:
        """The assistant turn as the card's training data writes it."""
        return f"<think>\n{self.reasoning}\n</think>\n{self.answer}"


# Two short cases, none of them in the shipped eval set (benchmarks/data/questions.jsonl): the base copies their
# length and shape, so they are kept short; facts checked against standard references.
PRIMER: tuple[WorkedExample, ...] = (
    WorkedExample(
        "A 30-year-old woman has fatigue, cold intolerance, weight gain and constipation. "
        "Which blood test should be ordered first?",
        "These symptoms together suggest hypothyroidism. The most sensitive first test for primary hypothyroidism "
        "is the serum TSH, which rises before free T4 falls.",
        "A serum TSH (thyroid-stimulating hormone) level; if it is high, a free T4 level confirms hypothyroidism.",
    ),
    WorkedExample(
        "A 60-year-old smoker has crushing chest pain for 30 minutes with ST elevation in leads II, III and aVF. "
        "What is the diagnosis?",
        "Chest pain lasting over 20 minutes in a smoker points to an acute coronary syndrome. ST elevation in II, "
        "III and aVF marks the inferior wall, usually supplied by the right coronary artery.",
        "An acute inferior ST-elevation myocardial infarction, most often from a right coronary artery occlusion; "
        "it needs urgent reperfusion.",
    ),
)


@dataclass(frozen=True)
class PromptStyle:
    name: str
    label: str  # what the page, CLI and export say about the prompt the model got
    examples: tuple[WorkedExample, ...] = ()
    chat_template: bool = True  # False: plain text in the card's "### Question/### Response" layout
    prefill: str = ""  # text the model's turn starts with
    stop_texts: tuple[str, ...] = CARD_STOP_TEXTS
    decoding: GenerationParams | None = None  # None: the card's sampling (Settings.generation_defaults)

    @property
    def primed(self) -> bool:
        return bool(self.examples)

    @property
    def opens_reasoning(self) -> bool:
        """The prompt opens ``<think>`` itself: everything generated is reasoning until ``</think>``."""
        return self.prefill.strip().lower().startswith("<think>")


CARD = PromptStyle("card", "the model card's prompt")
_PRIMED = "base model, shown the format by two worked examples (the fine-tune does this on its own)"
# Decoding for the primed base, chosen by benchmarks/eval.py: see docs/eval/README.md.
BASE_DECODING = GenerationParams(max_new_tokens=512, temperature=0.3, top_p=0.95, top_k=64, repetition_penalty=1.15)
PRIMER_TEXT = PromptStyle("primer", _PRIMED, PRIMER, False, THINK_PREFILL, BASE_STOP_TEXTS, BASE_DECODING)
PRIMER_CHAT = replace(PRIMER_TEXT, name="primer-chat", label=_PRIMED + " in the chat template", chat_template=True)
BASE_PROMPTS: dict[str, PromptStyle] = {style.name: style for style in (CARD, PRIMER_TEXT, PRIMER_CHAT)}
# What MEDCOT_BASE_PROMPT=auto gives the embedded base (chosen by the eval); any other base alone keeps the card's.
EMBEDDED_DEFAULT = PRIMER_TEXT


def base_prompt_style(setting: str, embedded: bool) -> PromptStyle:
    """The style a base model alone gets for MEDCOT_BASE_PROMPT (``auto``: the primer for the embedded base)."""
    if setting == "auto":
        return EMBEDDED_DEFAULT if embedded else CARD
    return BASE_PROMPTS[setting]
