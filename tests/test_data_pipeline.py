"""Pre-training data: packing, cache, determinism/resume, process slices, epochs, held-out batches, errors."""
import json
import os
import threading

import numpy as np
import pytest

from jaxdistill import data as jdata
from jaxdistill.data import packing

WORDS = ("the a film story student teacher network distillation unaffable knowledge small large imitate "
         "paris rained stayed read charming funny moving growing dull transformers tokenization embeddings "
         "of and in to is was it we so all day").split()
L, B = 32, 8


def _docs(n, seed=0):
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n):
        sents = [" ".join(rng.choice(WORDS, size=rng.integers(3, 12))) + "." for _ in range(rng.integers(1, 6))]
        docs.append("\n".join(sents))
    return docs


def _write_text(path, docs):
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return str(path)


def _cfg(path, cache, **kw):
    cfg = jdata.default_data_config()
    cfg.corpus.path = str(path)
    cfg.cache_dir = str(cache)
    cfg.seq_len = L
    cfg.num_proc = 1
    cfg.holdout_sequences = 4
    cfg.progress = False
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def _build(cfg, tok_dir, batch=B, **kw):
    return jdata.build_pretraining_data(cfg, tok_dir, batch, vocab_size=kw.get("vocab_size", 30522),
                                        max_positions=kw.get("max_positions", 512))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    docs = _docs(60)
    return docs, _write_text(d / "docs.txt", docs), d / "cache"


@pytest.fixture(scope="module")
def built(corpus, minilm_path):
    docs, path, cache = corpus
    return _build(_cfg(path, cache), minilm_path)


def _equal(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_batch_contract(built):
    b = built.batch(0)
    assert set(b) == {"input_ids", "attention_mask", "token_type_ids", "mlm_labels"}
    assert all(v.shape == (B, L) and v.dtype == np.int32 for v in b.values())
    assert (b["input_ids"][:, 0] == 101).all()  # [CLS]
    assert ((b["mlm_labels"] != -100) <= (b["attention_mask"] == 1)).all()
    assert built.tokenizer_dir and built.num_sequences > 3 * B and built.steps_per_epoch == built.num_sequences // B


def test_packing_keeps_every_token_once(corpus, built, minilm_tokenizer):
    docs, _, _ = corpus
    p = built.prepared
    assert p.tokens.shape[1] == L and (p.lengths <= L).all() and (p.lengths[:-1] == L).all()
    stream = []
    for i, d in enumerate(docs):
        if i:
            stream.append(102)  # [SEP] marks the document boundary
        stream.extend(minilm_tokenizer(d, add_special_tokens=False)["input_ids"])
    rows = [np.asarray(p.tokens[i, 1:p.lengths[i] - 1]) for i in range(len(p.lengths))]
    assert (np.asarray(p.tokens)[:, 0] == 101).all()
    assert all(p.tokens[i, p.lengths[i] - 1] == 102 for i in range(len(p.lengths)))
    assert np.array_equal(np.concatenate(rows), np.asarray(stream))
    assert p.manifest["num_documents"] == len(docs)
    counts = np.bincount([t for t in stream if t != 102], minlength=30522)
    assert np.array_equal(p.token_counts, counts)


def test_document_packing_respects_boundaries(corpus, minilm_path, minilm_tokenizer, tmp_path):
    docs, path, _ = corpus
    data = _build(_cfg(path, tmp_path, pack="document", seq_len=16), minilm_path)
    p = data.prepared
    pieces, i = [], 0
    for d in docs:
        ids = minilm_tokenizer(d, add_special_tokens=False)["input_ids"]
        got = []
        while len(got) < len(ids):
            got.extend(p.tokens[i, 1:p.lengths[i] - 1].tolist())
            assert (np.asarray(p.tokens[i, p.lengths[i]:]) == 0).all()
            i += 1
        pieces.append(got == ids)
    assert all(pieces) and i == len(p.lengths)


def test_resume_equals_uninterrupted_and_seeds_differ(corpus, built, minilm_path):
    k = 5
    from_zero = dict(built.iterator(0, end_step=k + 4))
    resumed = dict(built.iterator(k, end_step=k + 4))
    assert sorted(resumed) == list(range(k, k + 4))
    for s in resumed:
        assert _equal(from_zero[s], resumed[s]) and _equal(resumed[s], built.batch(s))
    assert not np.array_equal(from_zero[0]["input_ids"], from_zero[1]["input_ids"])
    _, path, cache = corpus
    other = _build(_cfg(path, cache, seed=1), minilm_path)
    assert other.prepared.path == built.prepared.path  # same cache, different order
    assert not np.array_equal(other.sequence_indices(0), built.sequence_indices(0))
    assert not np.array_equal(other.permutation(0), built.permutation(0))


def test_each_epoch_sees_every_sequence_once(built):
    N = built.num_sequences
    steps = -(-2 * N // B) + 1
    stream = np.concatenate([built.sequence_indices(s) for s in range(steps)])
    e0, e1 = stream[:N], stream[N:2 * N]
    assert np.array_equal(np.sort(e0), built.train_indices) and np.array_equal(np.sort(e1), built.train_indices)
    assert not np.array_equal(e0, e1)  # a fresh permutation per epoch
    assert not set(built.holdout_indices.tolist()) & set(built.train_indices.tolist())
    assert len(built.holdout_indices) + N == built.prepared.tokens.shape[0]


@pytest.mark.parametrize("P", [2, 4])
def test_process_slices_partition_the_global_batch(built, P):
    for step in (0, 3, 17):
        glob = built.batch(step)
        parts = [built.batch(step, p, P) for p in range(P)]
        assert all(v.shape == (B // P, L) for part in parts for v in part.values())
        for key in glob:
            assert np.array_equal(np.concatenate([part[key] for part in parts]), glob[key])
        idx = [set(built.sequence_indices(step, p, P).tolist()) for p in range(P)]
        assert all(not (idx[a] & idx[b]) for a in range(P) for b in range(a + 1, P))
    it = built.iterator(3, process_index=1, process_count=P, end_step=5)
    assert all(_equal(batch, built.batch(s, 1, P)) for s, batch in it)
    with pytest.raises(ValueError, match="not divisible by process_count=3"):
        built.batch(0, 0, 3)


def test_prefetch_thread_stops_when_closed(built):
    it = built.iterator(0, prefetch=3)
    assert next(it)[0] == 0 and next(it)[0] == 1
    it.close()
    assert not any(t.name == "jaxdistill-data-prefetch" for t in threading.enumerate())


def test_eval_batches_are_fixed(built):
    a = built.eval_batch(0, 4)
    assert _equal(a, built.eval_batch(0, 4)) and a["input_ids"].shape == (4, L)
    two = built.eval_batch(0, 2)
    assert _equal({k: v[:2] for k, v in a.items()}, two)  # corruption keyed by the held-out index
    assert _equal(built.eval_batch(1, 2), {k: v[2:] for k, v in a.items()})
    assert (a["mlm_labels"] != -100).any()


def test_cache_is_reused_without_tokenizing(corpus, built, minilm_path, monkeypatch):
    _, path, cache = corpus
    def boom(*a, **k):
        raise AssertionError("tokenized again")
    monkeypatch.setattr(packing, "encode_documents", boom)
    again = _build(_cfg(path, cache), minilm_path)
    assert again.prepared.path == built.prepared.path and _equal(again.batch(2), built.batch(2))
    assert not [n for n in os.listdir(cache) if n.startswith(".tmp")]
    with open(os.path.join(built.prepared.path, "manifest.json")) as f:
        assert json.load(f)["seq_len"] == L


def test_multiprocess_and_hf_jsonl_give_the_same_tokens(corpus, built, minilm_path, tmp_path):
    docs, path, _ = corpus
    mp = _build(_cfg(path, tmp_path / "mp", num_proc=2), minilm_path)
    assert np.array_equal(np.asarray(mp.prepared.tokens), np.asarray(built.prepared.tokens))
    jl = tmp_path / "docs.jsonl"
    jl.write_text("".join(json.dumps({"id": i, "body": d}) + "\n" for i, d in enumerate(docs)), encoding="utf-8")
    cfg = _cfg(jl, tmp_path / "hf")
    cfg.corpus.source, cfg.corpus.text_field = "hf", "body"
    hf = _build(cfg, minilm_path)
    assert np.array_equal(np.asarray(hf.prepared.tokens), np.asarray(built.prepared.tokens))


def test_whole_word_and_smoothing_configs_build(corpus, minilm_path, minilm_tokenizer):
    _, path, cache = corpus
    data = _build(_cfg(path, cache, whole_word_mask=True, frequency_smoothing=0.7), minilm_path)
    b = data.batch(0)
    cont = data.tokenizer.continuation_table()
    assert cont[minilm_tokenizer.convert_tokens_to_ids("##ff")] and not cont[101]
    tgt = b["mlm_labels"] != -100
    assert tgt.any() and data.spec.whole_word and data.spec.weights is not None


# ------------------------------------------------------------------------------------------- errors
@pytest.fixture
def no_tokenizing(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("work started before validation")
    monkeypatch.setattr(packing, "encode_documents", boom)


def test_error_seq_len_above_max_positions(corpus, minilm_path, tmp_path, no_tokenizing):
    _, path, _ = corpus
    with pytest.raises(ValueError, match=r"data.seq_len=1024 is above the teacher's max_position_embeddings=512"):
        _build(_cfg(path, tmp_path, seq_len=1024), minilm_path)


def test_error_vocabulary_larger_than_embeddings(corpus, minilm_path, tmp_path, no_tokenizing):
    _, path, _ = corpus
    with pytest.raises(jdata.TokenizerError, match=r"30522 ids\) but the teacher's word embeddings have only 1000 rows"):
        _build(_cfg(path, tmp_path), minilm_path, vocab_size=1000)
    with pytest.raises(jdata.TokenizerError, match="no tokenizer.json or vocab.txt"):
        _build(_cfg(path, tmp_path), str(tmp_path))


@pytest.mark.parametrize("content,message", [
    ("", "is empty"), ("  \n\n \n", "is empty"), (b"\xff\xfe\x00b\x00", "looks binary"),
    (b"caf\xe9 au lait", "is not UTF-8 text")])
def test_error_empty_or_unreadable_corpus(tmp_path, minilm_path, no_tokenizing, content, message):
    f = tmp_path / "c.txt"
    f.write_bytes(content.encode() if isinstance(content, str) else content)
    with pytest.raises(jdata.CorpusError, match=message):
        _build(_cfg(f, tmp_path / "cache"), minilm_path)
    assert not (tmp_path / "cache").exists() or not os.listdir(tmp_path / "cache")


def test_error_missing_path_and_empty_folder(tmp_path, minilm_path, no_tokenizing):
    with pytest.raises(jdata.CorpusError, match="does not exist"):
        _build(_cfg(tmp_path / "nope.txt", tmp_path), minilm_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(jdata.CorpusError, match="has no .txt/.text files"):
        _build(_cfg(tmp_path / "empty", tmp_path), minilm_path)
    cfg = _cfg("", tmp_path)
    with pytest.raises(jdata.CorpusError, match="data.corpus.path is not set"):
        _build(cfg, minilm_path)


def test_error_unreadable_file(tmp_path, minilm_path, no_tokenizing, monkeypatch):
    from jaxdistill.data import corpus as corpus_mod
    f = tmp_path / "secret.txt"
    f.write_text("some text")
    real_open = open

    def guarded_open(path, *a, **k):  # as chmod 000 would (the tests may run as root, who reads anything)
        if str(path) == str(f):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)
    monkeypatch.setattr(corpus_mod, "open", guarded_open, raising=False)
    with pytest.raises(jdata.CorpusError, match="secret.txt' cannot be read: Permission denied; check its permissions"):
        _build(_cfg(f, tmp_path / "cache"), minilm_path)


def test_error_missing_text_field(tmp_path, minilm_path, no_tokenizing):
    jl = tmp_path / "c.jsonl"
    jl.write_text('{"body": "hello world"}\n', encoding="utf-8")
    cfg = _cfg(jl, tmp_path)
    cfg.corpus.source = "hf"
    with pytest.raises(jdata.CorpusError, match=r"text field 'text' is not in corpus file .*fields are \['body'\]"):
        _build(cfg, minilm_path)
    csvf = tmp_path / "c.csv"
    csvf.write_text("title,body\na,b\n", encoding="utf-8")
    cfg.corpus.path, cfg.corpus.text_field = str(csvf), "content"
    with pytest.raises(jdata.CorpusError, match=r"text field 'content' is not in .*\['title', 'body'\]"):
        _build(cfg, minilm_path)


def test_error_tfds_without_the_extra(tmp_path, minilm_path, no_tokenizing):
    try:
        import tensorflow_datasets  # noqa: F401
        pytest.skip("tensorflow_datasets is installed")
    except ImportError:
        pass
    cfg = _cfg("", tmp_path)
    cfg.corpus.source, cfg.corpus.name = "tfds", "wiki40b/en"
    with pytest.raises(jdata.CorpusError, match=r"needs tensorflow-datasets .*pip install 'jaxdistill\[tfds\]'"):
        _build(cfg, minilm_path)


def test_tfds_adapter_with_a_stand_in_data_source(corpus, built, minilm_path, tmp_path, monkeypatch):
    """The TFDS path without TensorFlow: a stand-in ``tensorflow_datasets`` whose ``data_source`` returns what
    an array_record source returns (a random-access sequence of feature dicts with bytes text)."""
    import sys
    import types
    docs, _, _ = corpus
    calls = []

    def data_source(name, split, data_dir=None):
        calls.append((name, split, data_dir))
        return [{"text": d.encode("utf-8"), "title": b"t"} for d in docs]
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", types.SimpleNamespace(data_source=data_source))
    cfg = _cfg("", tmp_path)
    cfg.corpus.source, cfg.corpus.name, cfg.corpus.split = "tfds", "wiki40b/en", "train[:10%]"
    data = _build(cfg, minilm_path)
    assert calls == [("wiki40b/en", "train[:10%]", None)]
    assert np.array_equal(np.asarray(data.prepared.tokens), np.asarray(built.prepared.tokens))
    cfg.corpus.text_field = "body"
    with pytest.raises(jdata.CorpusError, match=r"text field 'body' is not in TFDS dataset .*\['text', 'title'\]"):
        _build(cfg, minilm_path)


def test_tokenizer_from_tokenizer_json_or_vocab_txt_alone(minilm_path, tmp_path, sentences):
    import shutil
    a = jdata.load_tokenizer(minilm_path, vocab_size=30522)
    for f in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(os.path.join(minilm_path, f), tmp_path / f)
    b = jdata.load_tokenizer(str(tmp_path), vocab_size=30522)  # built by transformers from vocab.txt
    assert (a.cls_id, a.sep_id, a.pad_id, a.mask_id, a.size) == (101, 102, 0, 103, 30522)
    assert (b.cls_id, b.sep_id, b.pad_id, b.mask_id, b.size) == (101, 102, 0, 103, 30522)
    assert a.special_ids == b.special_ids == [0, 100, 101, 102, 103]
    enc = [t.backend().encode_batch(sentences + ["Unaffable distillation"], add_special_tokens=False) for t in (a, b)]
    assert [e.ids for e in enc[0]] == [e.ids for e in enc[1]]
    assert a.continuation_table()[a.vocab["##able"]] and not a.continuation_table()[a.vocab["able"]]


def test_builtin_python_docs_corpus(tmp_path):
    """The built-in corpus is real English prose from the Python installation, written once to the cache."""
    from jaxdistill.data.corpus import CorpusError, CorpusSpec, builtin_text_file, open_corpus
    spec = CorpusSpec.from_config({"source": "builtin", "name": "python_docs"})
    corpus = open_corpus(spec, str(tmp_path))
    docs = [d for batch in corpus.documents() for d in batch]
    words = sum(len(d.split()) for d in docs)
    assert len(docs) > 500 and words > 50_000
    assert any("statement" in d for d in docs)
    path = builtin_text_file("python_docs", str(tmp_path))
    mtime = os.stat(path).st_mtime_ns
    assert builtin_text_file("python_docs", str(tmp_path)) == path and os.stat(path).st_mtime_ns == mtime
    with pytest.raises(CorpusError, match="not a built-in corpus; use one of \\['python_docs'\\]"):
        CorpusSpec.from_config({"source": "builtin", "name": "wikipedia"})


def test_the_cache_is_prepared_once_by_all_processes(corpus, built, minilm_path, tmp_path, caplog):
    """Two processes each pack their half of the shards into one shared cache; the batches equal those of a
    cache one process prepared with the same shards, and each process tokenized about half the documents."""
    import logging
    from jaxdistill.data import cache as cache_lib
    docs, path, _ = corpus
    tok = jdata.load_tokenizer(minilm_path)
    spec = jdata.CorpusSpec.from_config(_cfg(path, tmp_path).corpus)
    one = cache_lib.prepare(jdata.open_corpus(spec), tok, L, str(tmp_path / "one"), progress=False, docs_per_shard=7)
    assert one.manifest["num_shards"] == 9 and one.manifest["num_documents"] == len(docs)
    results, errors = {}, []

    def host(i):
        try:
            results[i] = cache_lib.prepare(jdata.open_corpus(spec), tok, L, str(tmp_path / "shared"), progress=False,
                                           docs_per_shard=7, process_index=i, process_count=2)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    with caplog.at_level(logging.INFO, logger="jaxdistill.data.cache"):
        threads = [threading.Thread(target=host, args=(i,)) for i in (0, 1)]
        [t.start() for t in threads]
        [t.join(120) for t in threads]
    assert not errors, errors
    counts = sorted(int(r.getMessage().split(" tokenized ")[1].split()[0]) for r in caplog.records
                    if "/2 tokenized " in r.getMessage())
    assert counts == [28, 32], counts  # process 1: shards 1,3,5,7 (4 x 7 docs); 0: shards 0,2,4,6 and 8 (4 docs)
    for r in results.values():
        assert np.array_equal(np.asarray(r.tokens), np.asarray(one.tokens))
        assert np.array_equal(r.lengths, one.lengths) and np.array_equal(r.token_counts, one.token_counts)
    # shards lose no token: the 9-shard cache holds as many as the one-shard cache of the same corpus
    assert one.manifest["num_tokens"] == built.prepared.manifest["num_tokens"]
    assert one.lengths.sum() - 2 * len(one.lengths) == built.prepared.lengths.sum() - 2 * len(built.prepared.lengths) \
        - (len(docs) - 1) + (len(docs) - 9)  # [SEP]s between documents: 59 in one stream, 51 within 9 shards


def test_a_shard_cache_reads_like_one_array(tmp_path):
    from jaxdistill.data.cache import ShardedRows
    a, b = np.arange(12).reshape(3, 4), np.arange(100, 108).reshape(2, 4)
    rows, whole = ShardedRows([a, b]), np.concatenate([a, b])
    idx = np.array([4, 0, 3, 2])
    assert rows.shape == (5, 4) and np.array_equal(rows[idx], whole[idx]) and np.array_equal(rows[3], whole[3])
    assert np.array_equal(rows[-1, 1:3], whole[-1, 1:3]) and np.array_equal(np.asarray(rows), whole)
    assert np.array_equal(rows[idx, :2], whole[idx, :2])
