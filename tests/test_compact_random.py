"""student.init="compact_random": a random student at the shape HomoDistil would end at (ablation arm C)."""
import os

import numpy as np
import pytest

from engine_helpers import tiny_homodistil_config, tiny_setup


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("compact")
    teacher, corpus = tiny_setup(str(root))
    return root, teacher, corpus


def _config(setup, **pruning):
    root, teacher, corpus = setup
    c = tiny_homodistil_config(teacher, corpus, str(root / "cache"), steps=8, checkpoint_every=8)
    c.student.init = "compact_random"
    c.pruning.enabled = False
    c.pruning.update(pruning)
    return c


def test_shape_and_budget_equal_the_pruned_students(setup):
    from jaxdistill import experiment
    c = _config(setup)
    exp = experiment.resolve(c)
    s = exp.student_config
    assert (s.hidden_size, s.intermediate_size, s.num_attention_heads, s.attention_head_size) == (24, 32, 4, 6)
    assert s.num_hidden_layers == exp.teacher_config.num_hidden_layers
    assert s.scale_dim == 6  # its own scale: a fresh model, not a pruned teacher
    assert exp.pruning is None  # trained unpruned
    c2 = _config(setup)
    c2.student.init = "copy"
    c2.pruning.enabled = True
    pruned = experiment.resolve(c2)
    from jaxdistill.compaction import full_param_count
    assert full_param_count(s) == pruned.pruning.final_param_count(pruned.student_config)


def test_budget_from_target_params(setup):
    from jaxdistill import experiment
    from jaxdistill.compaction import full_param_count
    exp0 = experiment.resolve(_config(setup))
    budget = full_param_count(exp0.teacher_config)["backbone"] // 2
    exp = experiment.resolve(_config(setup, hidden=None, ffn=None, head_dim=None, target_params=budget))
    assert full_param_count(exp.student_config)["backbone"] <= budget
    assert exp.student_config.hidden_size < exp.teacher_config.hidden_size


def test_refused_with_pruning_enabled(setup):
    from jaxdistill import experiment
    from jaxdistill.errors import ConfigError
    c = _config(setup)
    c.pruning.enabled = True
    with pytest.raises(ConfigError, match="set pruning.enabled=False"):
        experiment.resolve(c)


def test_trains_with_homodistils_objective_through_projections(setup, tmp_path):
    """Hidden MSE against the wider teacher goes through the per-layer projections [24 -> 32]; with
    train.eval_per_batch the held-out metrics also come per batch (their mean is the logged value)."""
    import json
    from jaxdistill import train
    c = _config(setup)
    c.train.update(dict(eval_every=4, eval_batches=2, eval_per_batch=True))
    summary = train.train_and_evaluate(c, str(tmp_path / "run"))
    assert summary["status"] == "completed", summary
    assert np.isfinite(summary["metrics"]["loss"]) and summary["metrics"]["loss"] > 0
    from jaxdistill.models import hf
    config, _ = hf.load(os.path.join(str(tmp_path / "run"), c.export.dir) if not os.path.isabs(c.export.dir)
                        else c.export.dir)
    assert config.hidden_size == 24 and config.intermediate_size == 32
    evals = [json.loads(x) for x in open(tmp_path / "run" / "metrics.jsonl") if "eval/kl" in x]
    assert [e["step"] for e in evals] == [0, 4, 8]
    for e in evals:
        for k in ("eval/kl", "eval/mlm"):
            assert len(e[k + "/batches"]) == 2
            np.testing.assert_allclose(np.mean(e[k + "/batches"]), e[k], rtol=1e-6)
    assert evals[-1]["eval/mlm"] < evals[0]["eval/mlm"]  # a random student learns from the MLM term


@pytest.mark.parametrize("init", ["compact_random", "copy"])
def test_final_shape_without_standard_form_needs_own_format_export(setup, init):
    """Hidden 23 with 4 heads x 6 has no standard BERT form: refused at start-up (not after training, when
    the export would fail) unless export.own_format or export.enabled=False."""
    from jaxdistill import experiment
    from jaxdistill.errors import ConfigError
    c = _config(setup, hidden=23)
    c.student.init = init
    c.pruning.enabled = init == "copy"
    with pytest.raises(ConfigError, match="export.own_format=True"):
        experiment.resolve(c)
    c.export.own_format = True
    assert experiment.resolve(c).export_own_format
    c.export.own_format, c.export.enabled = False, False
    assert experiment.resolve(c).export_dir is None
    assert experiment.resolve(_config(setup, hidden=28)).student_config.hidden_size == 28  # padded: 4 heads x 7
