"""Quality classifiers: fastText trained on the shared labels, NVIDIA's DeBERTa layout with a tiny
random checkpoint, the metrics, and the per-source policy in full runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import zyda2
from filters.quality import DebertaClassifier, FastTextClassifier, metrics, read_labels, roc_auc, split
from pipelines.core.schema import read_folder
from tests.conftest import run_local


def test_metrics_on_a_hand_computed_example():
    y = np.array([1, 1, 0, 0, 1], bool)
    pred = np.array([1, 0, 0, 1, 1], bool)
    score = np.array([0.9, 0.4, 0.3, 0.6, 0.6])
    m = metrics(y, pred, score)
    assert m["accuracy"] == 0.6 and m["precision"] == 2 / 3 and m["recall"] == 2 / 3
    assert m["f1"] == pytest.approx(2 / 3)
    # positives 0.9, 0.4, 0.6 vs negatives 0.3, 0.6: wins 2 + (1 + 0) + (1 + 0.5) = 4.5 of 6
    assert m["roc_auc"] == pytest.approx(4.5 / 6)
    rng = np.random.default_rng(0)
    y, s = rng.random(200) < 0.4, rng.integers(0, 10, 200).astype(float)
    brute = np.mean([(a > b) + 0.5 * (a == b) for a in s[y] for b in s[~y]])
    assert roc_auc(y, s) == pytest.approx(brute)


def test_fasttext_beats_chance_on_held_out_labels(quality_model, data_dir):
    report = json.loads(Path(str(quality_model) + ".json").read_text())
    _, _, test = split(read_labels(data_dir / "quality" / "labels.jsonl"), seed=report["seed"])
    clf = FastTextClassifier(quality_model)
    preds, prob = clf.predict(test.texts)
    m = metrics(test.good, np.array(preds) == "High", prob)
    assert m == pytest.approx(report["test"])   # the reported figures are the held-out ones
    majority = max(test.good.mean(), 1 - test.good.mean())
    assert m["accuracy"] >= majority + 0.1 and m["roc_auc"] >= 0.7, m
    assert report["sizes"] == {"train": 209, "valid": 70, "test": 70} and report["quantized"]


def test_final_model_is_refit_on_train_and_valid(quality_model, data_dir, tmp_path):
    """The threshold comes from a train-only fit scored on valid; the shipped model is then refit on
    train+valid (byte-identical to a direct fit on those 80%), and the test figures are that model's."""
    from filters.quality import _fit_texts
    report = json.loads(Path(str(quality_model) + ".json").read_text())
    train, valid, test = split(read_labels(data_dir / "quality" / "labels.jsonl"), seed=report["seed"])
    direct = tmp_path / "direct.ftz"
    _fit_texts(train.texts + valid.texts, np.r_[train.good, valid.good], direct, tmp_path, 50, 64, report["seed"],
               True, report["max_chars"])
    assert direct.read_bytes() == Path(quality_model).read_bytes()
    assert report["fit_on"] == "train+valid" and report["valid"]["model"] == "train only"
    only_train = tmp_path / "train.ftz"
    _fit_texts(train.texts, train.good, only_train, tmp_path, 50, 64, report["seed"], True, report["max_chars"])
    assert only_train.read_bytes() != direct.read_bytes()
    prob = FastTextClassifier(direct, max_chars=report["max_chars"]).prob_good(test.texts)
    assert metrics(test.good, prob >= report["threshold"], prob) == pytest.approx(report["test"])


def test_eval_quality_cli_prints_json_metrics(quality_model, data_dir, capsys):
    assert zyda2.main(["eval-quality", str(quality_model), str(data_dir / "quality" / "labels.jsonl")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["backend"] == "fasttext" and out["n"] == 349 and 0.5 < out["accuracy"] <= 1
    assert {"precision", "recall", "f1", "roc_auc"} <= set(out)


@pytest.fixture(scope="module")
def tiny_deberta(tmp_path_factory, data_dir) -> Path:
    """A randomly initialised DeBERTa-v2 quality classifier saved in NVIDIA's checkpoint layout."""
    import sentencepiece as spm
    import torch
    from safetensors.torch import save_file
    from transformers import DebertaV2Config, DebertaV2Tokenizer

    root = tmp_path_factory.mktemp("tiny_deberta")
    texts = [json.loads(line)["text"] for line in open(data_dir / "quality" / "labels.jsonl")]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_prefix=str(root / "spm"), vocab_size=600,
                                   model_type="unigram", byte_fallback=True, minloglevel=2)
    ckpt = root / "ckpt"
    DebertaV2Tokenizer(vocab_file=str(root / "spm.model")).save_pretrained(ckpt)
    base = root / "base"
    DebertaV2Config(vocab_size=700, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=1024, relative_attention=True,
                    position_buckets=64, pos_att_type=["p2c", "c2p"]).save_pretrained(base)
    (ckpt / "config.json").write_text(json.dumps({"base_model": str(base), "fc_dropout": 0.2, "max_len": 1024,
                                                  "id2label": {"0": "High", "1": "Low", "2": "Medium"}}))
    torch.manual_seed(0)
    from transformers import AutoConfig, AutoModel
    backbone = AutoModel.from_config(AutoConfig.from_pretrained(base))
    state = {f"model.{k}": v.contiguous() for k, v in backbone.state_dict().items()}
    state["fc.weight"] = torch.randn(3, 32) * 2
    state["fc.bias"] = torch.zeros(3)
    save_file(state, ckpt / "model.safetensors")
    return ckpt


def test_deberta_path_labels_and_probabilities(tiny_deberta, data_dir):
    clf = DebertaClassifier(str(tiny_deberta), max_chars=6000, max_tokens=1024, batch_size=8, device="cpu")
    texts = [json.loads(line)["text"] for line in open(data_dir / "quality" / "labels.jsonl")][:20]
    probs = clf.predict_proba(texts)
    assert probs.shape == (20, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    labels, high = clf.predict(texts)
    assert set(labels) <= {"High", "Low", "Medium"} and np.allclose(high, probs[:, 0])
    # batching and length-sorting do not change a document's scores
    one_by_one = np.concatenate([clf.predict_proba([t]) for t in texts[:5]])
    assert np.allclose(one_by_one, probs[:5], atol=1e-5)


def test_deberta_checkpoint_must_match_the_architecture(tiny_deberta, tmp_path):
    from safetensors.torch import load_file, save_file
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_deberta.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    state = load_file(str(tiny_deberta / "model.safetensors"))
    state.pop("fc.bias")
    save_file(state, broken / "model.safetensors")
    with pytest.raises(RuntimeError, match="fc.bias"):
        DebertaClassifier(str(broken), device="cpu")
    with pytest.raises(FileNotFoundError, match="huggingface-cli download"):
        DebertaClassifier(str(tmp_path / "no-such-model"), device="cpu")


def test_deberta_backend_in_a_full_run(ray_instance, data_dir, tiny_deberta, tmp_path):
    out = tmp_path / "run"
    report = run_local(out, data_dir / "sources", [
        "quality_filter.backend=deberta", f"quality_filter.model={tiny_deberta}", "quality_filter.batch_size=16",
        "quality_filter.max_chars=2000", "quality_filter.max_tokens=256", "ingest.max_docs_per_file=15"])
    assert report["totals"]["balanced"]
    for source in ("zyda", "dolma-cc"):
        scored = read_folder(out / "quality_filter" / source).to_pandas()
        assert set(scored["quality_pred"]) <= {"High"} and scored["quality_prob"].between(0, 1).all()
        stage = report["sources"][source]["stages"]["quality_filter"]
        assert stage["out"] == len(scored) and set(stage["removed"]) <= {"quality:Low", "quality:Medium"}
        assert stage["in"] == stage["out"] + sum(stage["removed"].values())


def test_per_source_policy_in_the_recipe_run(local_run):
    out, report = local_run
    q = {s: r["stages"]["quality_filter"] for s, r in report["sources"].items()}
    assert q["dclm"].get("untouched") and q["dclm"]["in"] == q["dclm"]["out"]
    assert not (out / "quality_filter" / "dclm").exists()           # untouched sources are not copied
    for source in ("zyda", "dolma-cc"):
        assert q[source]["removed"].get("quality:Low", 0) > 0
        kept = read_folder(out / "quality_filter" / source).to_pandas()
        assert (kept["quality_pred"] == "High").all() and len(kept) == q[source]["out"]
        shown = report["details"]["quality_filter"]["examples"][source]["quality:Low"]
        assert 1 <= len(shown) <= 5 and all(e["nemo_id"] and e["excerpt"] for e in shown)
        assert q[source]["removed_chars"]["quality:Low"] > 0
    fwe = read_folder(out / "quality_filter" / "fwe").to_pandas()
    assert fwe["quality_pred"].isna().all() and (fwe["int_score"] >= 3).all()


def test_fineweb_edu_cut_and_heuristics_policy(ray_instance, data_dir, tmp_path):
    """FineWeb-Edu keeps int_score >= 3 only; heuristics run only where `apply_to` says."""
    inp = tmp_path / "in"
    for folder in ("dclm", "zyda", "dolma-cc"):
        (inp / folder).mkdir(parents=True)
    real = pq.read_table(data_dir / "sources" / "fineweb-edu" / "data" / "CC-MAIN-2024-10" /
                         "train-00000-of-00001.parquet").slice(0, 10)
    scores = pa.array([1, 2, 3, 4, 5, 2, 3, None, 4, 0], pa.int64())
    table = real.set_column(real.schema.get_field_index("int_score"), "int_score", scores)
    target = inp / "fineweb-edu" / "data" / "CC-MAIN-2024-10" / "train-00000-of-00001.parquet"
    target.parent.mkdir(parents=True)
    pq.write_table(table, target)
    (inp / "zyda" / "zyda_c4-en").mkdir()
    zyda = pq.read_table(data_dir / "sources" / "zyda" / "zyda_c4-en" / "train-00000-of-00001.parquet").slice(0, 6)
    short = zyda.slice(0, 1).set_column(0, "text", pa.array(["too short"]))
    pq.write_table(pa.concat_tables([zyda, short]), inp / "zyda" / "zyda_c4-en" / "train-00000-of-00001.parquet")
    report = run_local(tmp_path / "out", inp, ["heuristic_filter.apply_to=[zyda]", "quality_filter.apply_to=[]"],
                       allow_empty=True)  # fwe and zyda only
    fwe = report["sources"]["fwe"]["stages"]["quality_filter"]
    assert fwe["removed"] == {"int_score_below_3": 4, "int_score_missing": 1} and fwe["out"] == 5
    heur = report["sources"]["zyda"]["stages"]["heuristic_filter"]
    assert heur["removed"] == {"min_chars": 1} and heur["in"] == 7
    assert report["details"]["heuristic_filter"]["examples"]["zyda"]["min_chars"][0]["excerpt"] == "too short"
    assert report["sources"]["fwe"]["stages"]["heuristic_filter"].get("untouched")
    assert report["totals"]["balanced"]


def test_train_quality_from_folders_and_eval_a_deberta_folder(tmp_path, data_dir, tiny_deberta, capsys):
    rows = [json.loads(line) for line in open(data_dir / "quality" / "labels.jsonl")]
    for label in ("good", "bad"):
        folder = tmp_path / label
        folder.mkdir()
        for i, row in enumerate(r for r in rows if r["label"] == label):
            (folder / f"{i:04d}.txt").write_text(row["text"])
    model = tmp_path / "folders.ftz"
    assert zyda2.main(["train-quality", "--positive", str(tmp_path / "good"), "--negative", str(tmp_path / "bad"),
                       "--output", str(model), "--no-quantize"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sizes"]["train"] + report["sizes"]["valid"] + report["sizes"]["test"] == len(rows)
    assert model.exists() and not report["quantized"]
    labels = tmp_path / "few.jsonl"
    labels.write_text("".join(json.dumps({"text": r["text"], "label": r["label"]}) + "\n" for r in rows[:12]))
    assert zyda2.main(["eval-quality", str(tiny_deberta), str(labels), "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["backend"] == "deberta" and out["n"] == 12 and 0 <= out["accuracy"] <= 1
