"""The faults suite's one warm reference, built once per session through the real command lines.

``ref`` holds: a cache with the smoke warm start (prepare + sft) and its default trajectory set, an
uninterrupted fpa-generate set of several shards (``gen``) and an uninterrupted fpa-train run
(``run``); every test copies what it corrupts, so the shared cache and references stay intact.
"""

from __future__ import annotations

import pytest

from faults_helpers import Ref, ok, run_dir, sha, shard_sums


@pytest.fixture(scope="session")
def ref(tmp_path_factory) -> Ref:
    r = Ref(tmp_path_factory.mktemp("faults"))
    ok(r.generate(r.gen))  # builds the warm start (prepare + sft) into r.cache, then the reference set
    r.gen_sums = shard_sums(r.gen)
    assert len(r.gen_sums) >= 8
    ok(r.train(r.root / "train-ref"))  # also caches fpa-train's default trajectory set
    r.run = run_dir(r.root / "train-ref")
    r.policy_sha = sha(r.run / "policy" / "model.safetensors")
    return r
