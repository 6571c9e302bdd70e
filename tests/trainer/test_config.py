"""The TOML config: the paper's defaults ship, overrides apply, unknown keys are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from splade_es.errors import ConfigError
from splade_es.trainer.config import MISTRAL_PROJECTIONS, TrainConfig

SHIPPED = Path(__file__).resolve().parents[2] / "configs" / "echo-mistral-7b.toml"


def test_the_shipped_config_is_the_papers_recipe():
    config = TrainConfig.load(SHIPPED)
    assert config.model.backbone == "mistralai/Mistral-7B-v0.3" and config.model.mode == "echo"
    assert config.model.quantization == "4bit" and config.model.max_length == 256
    assert (config.lora.r, config.lora.alpha, config.lora.dropout) == (16, 8, 0.1)
    assert config.lora.target_modules == MISTRAL_PROJECTIONS
    assert (config.loss.lambda_q, config.loss.lambda_d, config.loss.lambda_warmup_steps) == (0.03, 0.03, 50000)
    assert (config.optim.lr, config.optim.warmup_steps, config.optim.max_steps) == (2e-5, 6000, 150000)
    assert config.batch.size == 512
    weights = {d.name: d.weight for d in config.data.datasets}
    assert len(weights) == 26 and weights["gooaq_pairs"] == 20.53 and weights["TriviaQA_pairs"] == 0.5
    assert all(Path(d.path).is_absolute() for d in config.data.datasets)  # relative to the file


def test_overrides_take_toml_values(tmp_path):
    config = TrainConfig.load(SHIPPED, ["optim.lr=1e-4", "lora.target_modules=[\"q_proj\"]", "model.mode=bidirectional",
                                        "run.tensorboard=false", "batch.size=64"])
    assert config.optim.lr == 1e-4 and config.lora.target_modules == ["q_proj"]
    assert config.model.mode == "bidirectional" and config.run.tensorboard is False and config.batch.size == 64


@pytest.mark.parametrize("text, message", [
    ("[optim]\nlearning_rate = 1\n", "unknown key(s) optim.learning_rate"),
    ("[optimiser]\nlr = 1\n", "unknown key(s) optimiser"),
    ("[[data.datasets]]\npath = 'x'\nratio = 2\n", "unknown key(s) data.datasets[0].ratio"),
    ("[optim]\nlr = 'fast'\n", "optim.lr must be float"),
    ("[model]\nmode = 'sideways'\n", "model.mode = 'sideways': choose"),
    ("[batch]\nsize = 0\n", "batch.size must be at least 1"),
    ("[run]\ncpu_bf16 = 'yes'\n", "run.cpu_bf16 = 'yes': choose true, false or"),
    ("[optim\n", "invalid TOML"),
])
def test_bad_configs_name_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        TrainConfig.load(path)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_a_bad_override_is_named():
    with pytest.raises(ConfigError, match="unknown key"):
        TrainConfig.load(SHIPPED, ["optim.speed=3"])
    with pytest.raises(ConfigError, match="is not section.key=value"):
        TrainConfig.load(SHIPPED, ["optim.lr"])


def test_two_datasets_may_not_share_a_name(tmp_path):
    """Names key the sampler's cursors and the negatives decision: two train.jsonl.gz files in
    different folders would otherwise share both (and one dataset's indices read the other)."""
    datasets = [{"path": str(tmp_path / folder / "train.jsonl.gz")} for folder in ("msmarco", "nq")]
    with pytest.raises(ConfigError, match=r"the name\(s\) 'train' are used more than once"):
        TrainConfig.from_dict({"data": {"datasets": datasets}})
    named = TrainConfig.from_dict({"data": {"datasets": [{**datasets[0], "name": "msmarco"}, datasets[1]]}})
    assert [d.name for d in named.data.datasets] == ["msmarco", "train"]
