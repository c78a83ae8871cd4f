"""Hub teachers of any shape: config.json first (optional @revision), the real depth in validation errors,
clear offline errors (exit 3) naming the download, safetensors-only downloads; --push-to-hub offline.

Everything is offline: a hub model is a private Hugging Face cache written by `tiny.write_hub_cache`."""
import json
import os

import ml_collections
import pytest

from jaxdistill import cli
from jaxdistill.errors import EXIT_DATA, ConfigError, ModelError
from jaxdistill.experiment import student_config_of, teacher_config_of
from jaxdistill.models import hf, hub
from tiny import tiny_config, write_hub_cache

DEEP = tiny_config(num_hidden_layers=24)  # a 24-layer teacher of tiny widths (a bert-large stand-in)


def _layers(indices):
    return ml_collections.ConfigDict(dict(init="layers", layers=list(indices), overrides={}))


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A private hub cache with `jaxdistill-test/deep@v1` (config.json only) in place of the user's."""
    from huggingface_hub import constants
    cache = tmp_path / "hub"
    write_hub_cache(cache, "jaxdistill-test/deep", {"config.json": json.dumps(DEEP.to_hf_dict())}, revision="v1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_deep_local_teacher_is_validated_against_its_real_depth(tmp_path):
    teacher_dir = tmp_path / "deep"
    teacher_dir.mkdir()
    (teacher_dir / "config.json").write_text(json.dumps(DEEP.to_hf_dict()))  # the shape alone: no weights
    teacher, _ = teacher_config_of(str(teacher_dir))
    student, _, layers = student_config_of(teacher, _layers(range(0, 24, 4)))
    assert teacher.num_hidden_layers == 24 and student.num_hidden_layers == 6 and layers[-1] == 20
    assert student_config_of(teacher, _layers([0, 23]))[0].num_hidden_layers == 2
    with pytest.raises(ConfigError, match=r"teacher layers \[24\] are out of range: the teacher has 24 encoder "
                                          r"layers, 0-based indices 0\.\.23"):
        student_config_of(teacher, _layers([0, 24]))


def test_hub_teacher_config_comes_from_config_json_at_a_revision(hub_cache):
    teacher, source = teacher_config_of("jaxdistill-test/deep@v1")
    assert teacher.num_hidden_layers == 24 and "jaxdistill-test/deep@v1" in source
    with pytest.raises(ConfigError, match="the teacher has 24 encoder layers"):
        student_config_of(teacher, _layers([0, 12, 24]))


def test_unreachable_hub_teacher_is_exit_3_naming_the_download(hub_cache, capsys):
    with pytest.raises(ModelError, match=r"HF_HUB_OFFLINE is set .*`hf download jaxdistill-test/deep`") as e:
        teacher_config_of("jaxdistill-test/deep")  # only v1 is cached, not main
    assert e.value.exit_code == EXIT_DATA
    with pytest.raises(ModelError, match=r"`hf download jaxdistill-test/other --revision r2`"):
        hf.load("jaxdistill-test/other@r2")
    smoke = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "homodistil.py:smoke")
    code = cli.main(["distill", "--config", smoke, "--workdir", "unused", "--dry-run",
                     "--config.teacher.path=jaxdistill-test/missing"])
    err = capsys.readouterr().err
    assert code == 3 and "hf download jaxdistill-test/missing" in err and "Traceback" not in err


def test_hub_ids_revisions_and_weight_choice():
    assert hub.split_revision("org/name@v1.0") == ("org/name", "v1.0")
    assert hub.split_revision("bert-base-uncased") == ("bert-base-uncased", None)
    assert hf.looks_like_hub_id("bert-large-uncased@main") and hf.looks_like_hub_id("google/bert_uncased_L-4")
    assert not hf.looks_like_hub_id("./local") and not hf.looks_like_hub_id("/abs/path")
    assert not hf.looks_like_hub_id("a/b/c")
    assert hub.weight_patterns(["config.json", "model.safetensors", "pytorch_model.bin", "tf_model.h5"]) == \
        list(hub.SAFETENSORS_PATTERNS)
    assert hub.weight_patterns(["config.json", "pytorch_model.bin"]) == ["pytorch_model.bin"]
    assert hub.weight_patterns(None) == list(hub.SAFETENSORS_PATTERNS)  # offline: what the cache has


def test_push_to_hub_offline_is_a_clear_error_before_any_work(tmp_path, capsys):
    code = cli.main(["export", "--workdir", str(tmp_path), "--out", str(tmp_path / "out"),
                     "--push-to-hub", "me/student"])
    err = capsys.readouterr().err
    assert code == 3 and "HF_HUB_OFFLINE is set" in err and "hf upload me/student" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE"):
        hub.push_to_hub(str(tmp_path), "me/student")
