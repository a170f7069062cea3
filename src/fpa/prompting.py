"""Turn a question into the prompt string a model sees: a plain template, or the model's chat template."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PromptFormat:
    template: str = "{question}\n"  # str.format with the question
    use_chat_template: bool = False  # wrap the templated question as one user turn
    system: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.template, str) or "{question}" not in self.template:
            raise ValueError(f"template: must contain {{question}}, got {self.template!r}")
        try:
            self.template.format(question="q")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"template: not a str.format template with only {{question}} ({type(e).__name__}: "
                             f"{e}); write literal braces as {{{{ }}}}") from None
        if not isinstance(self.use_chat_template, bool):
            raise ValueError(f"use_chat_template: must be true or false, got {self.use_chat_template!r}")
        if self.system is not None and not isinstance(self.system, str):
            raise ValueError(f"system: must be a string or null, got {self.system!r}")

    def __call__(self, question: str, tokenizer=None) -> str:
        text = self.template.format(question=question)
        if not self.use_chat_template:
            return text
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt.use_chat_template=true but the tokenizer has no chat template")
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": text}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
