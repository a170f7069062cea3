"""Run directories are named from the result-changing config: same command, same directory."""

from __future__ import annotations

from omegaconf import OmegaConf

from testconfig import compose_config
from fpa.config.identity import config_hash, differences


def _plain(*overrides):
    cfg = compose_config("experiment=smoke", *overrides)
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)


def test_the_hash_ignores_where_output_goes_and_follows_what_changes_the_result():
    base = config_hash(_plain())
    assert config_hash(_plain("paths.cache_dir=/elsewhere", "logger=csv", "train.resume=never",
                              "callbacks.eval.every_n_steps=7", "callbacks.checkpoint.every_n_train_steps=3")) == base
    assert config_hash(_plain("optimizer.lr=1e-2")) != base and config_hash(_plain("seed=1")) != base
    assert differences(_plain(), _plain("optimizer.lr=1e-2", "logger=csv"))[0].startswith("optimizer.lr ")
    assert len(differences(_plain(), _plain("optimizer.lr=1e-2", "logger=csv"))) == 1
