"""Extractive question answering: SQuAD metrics, windows over long contexts, answer spans, end to end."""

import copy
import itertools
import json
import random
import shutil

import numpy as np
import pytest
import torch

from electra import hf, qa
from electra.config import tiny
from electra.finetune import FinetuneConfig, encode, predictions, run
from electra.model import Electra
from electra.tasks import Example, TaskError
from tests.conftest import SENTENCES

TEXT = dict(capture_output=True, text=True)
COLORS = "red green blue black white yellow orange purple".split()
THINGS = "car house boat door hat coat bike cup".split()
FILLER = "we saw it there and then it was late so they went home after the rain in the town".split()


def _squad(folder, version="1.1", n_train=300, n_dev=60, filler=12, seed=0):
    """SQuAD JSON files: "what color is the X ?" over filler text holding "the X is C ."; in
    version 2.0 a quarter of the contexts hold no such sentence (no answer)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_dev)):
        paragraphs = []
        for k in range(n):
            thing, color = rng.choice(THINGS), rng.choice(COLORS)
            before = " ".join(rng.choice(FILLER) for _ in range(rng.randint(0, filler)))
            after = " ".join(rng.choice(FILLER) for _ in range(rng.randint(0, filler)))
            fact = f"The {thing} is {color}." if version == "1.1" or k % 4 else ""
            context = " ".join(x for x in (before, fact, after) if x)
            answers = [{"text": color, "answer_start": context.index(fact) + len(f"The {thing} is ")}] if fact else []
            qas = [{"id": f"{split}-{k}", "question": f"What color is the {thing}?", "answers": answers}]
            if version == "2.0":
                qas[0]["is_impossible"] = not answers
            paragraphs.append({"context": context, "qas": qas})
        doc = {"version": version, "data": [{"title": "colors", "paragraphs": paragraphs}]}
        (folder / f"{split}-v{version}.json").write_text(json.dumps(doc))
    return folder


@pytest.fixture(scope="module")
def squad_model(tmp_path_factory):
    """A tiny random discriminator with a vocabulary of the synthetic questions and contexts."""
    from electra.tokenizer import save_tokenizer, train_wordpiece

    root = tmp_path_factory.mktemp("squad")
    examples = qa.read_squad(_squad(root / "v1") / "train-v1.1.json")
    texts = [e.text for e in examples] + [e.pair for e in examples]
    save_tokenizer(train_wordpiece(texts * 3, vocab_size=150, show_progress=False), root / "tok")
    torch.manual_seed(0)
    vocab = json.loads((root / "tok" / "tokenizer.json").read_text())["model"]["vocab"]
    hf.export_discriminator(Electra(tiny(vocab_size=len(vocab))), root / "model", tokenizer_dir=root / "tok")
    return root


def test_metrics_follow_the_official_squad_evaluation():
    assert qa.normalize_answer("  The  Eiffel-Tower, in PARIS! ") == "eiffeltower in paris"
    assert qa.normalize_answer("an apple a day") == "apple day"
    # "blue car" against "the big blue car": 2 shared tokens, precision 2/2, recall 2/3
    assert qa.answer_f1("blue car", "the big blue car") == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))
    assert qa.answer_f1("red", "blue") == 0.0
    scores = qa.answer_scores(
        ["the blue car", "blue car", "", "", "red"],
        [["Blue car!"], ["big blue car", "blue car"], [], ["red"], []],  # the best gold answer counts
    )
    # exact: 1, 1, 1 (no answer, none given), 0, 0; F1: 1, 1, 1, 0, 0
    assert scores == {"f1": pytest.approx(0.6), "exact_match": pytest.approx(0.6)}
    # a gold answer that normalizes to nothing ("The") is dropped, as the official script drops it
    assert qa.answer_scores([""], [["The", "Paris"]]) == {"f1": 0.0, "exact_match": 0.0}
    assert qa.answer_scores([""], [["The"]]) == {"f1": 1.0, "exact_match": 1.0}  # none left: no answer


def test_windows_cover_long_contexts_and_label_the_answer_in_each(squad_model, tmp_path):
    from electra.tokenizer import load_tokenizer

    tok = load_tokenizer(squad_model / "tok")
    examples = qa.read_squad(_squad(tmp_path, n_train=40, n_dev=1, filler=60, seed=1) / "train-v1.1.json")
    long_question = " ".join(["what"] * 80) + " color is the car?"
    examples.append(Example(long_question, examples[0].pair, examples[0].label))
    w = qa.encode_windows(tok, examples, max_length=48, stride=6)
    assert w.cut == [False] * (len(examples) - 1) + [True]
    assert max(map(len, w.ids)) <= 48 and len(w.ids) > 2 * len(examples)  # long contexts: several windows each
    for n, e in enumerate(examples):
        rows = [i for i, q in enumerate(w.question) if q == n]
        covered = {o for i in rows for o in w.offsets[i] if o is not None}
        every = {o for o in tok.encode(e.pair).offsets if o != (0, 0)}
        assert covered == every  # the windows leave no token of the context out
        found = [w.labels[i] for i in rows if w.labels[i] != (0, 0)]
        assert found, f"no window holds the answer of question {n}"
        for i in rows:
            s, t = w.labels[i]
            if (s, t) != (0, 0):  # the labelled tokens are exactly the answer's characters
                assert e.pair[w.offsets[i][s][0] : w.offsets[i][t][1]] == e.label[0][0]
    first = w.question.index(len(examples) - 1)  # the long question's first window: cut to (48 - 3) // 2 tokens
    assert len(w.ids[first]) == 48 and int((w.types[first] == 0).sum()) == 1 + 22 + 1  # [CLS], question, [SEP]
    with pytest.raises(TaskError, match="the window stride must be 0 to 22 at max-length 48"):
        qa.encode_windows(tok, examples, max_length=48, stride=23)

    # training leaves out a question whose answer is not at its answer_start; evaluation keeps it
    from electra.finetune import encode
    from electra.tasks import Task

    squad = Task("squad", "span", ("f1", "exact_match"))
    moved = Example("What color is the car?", "the car is red", [("red", 4)])
    train, cut = encode(tok, squad, [*examples, moved], [], 48, True, "train")
    assert train.questions == examples and cut == 1 and not train.windows.offsets
    dev, _ = encode(tok, squad, [*examples, moved], [], 48, True, "dev")
    assert dev.questions == [*examples, moved] and len(dev.windows.offsets) == len(dev.ids)


def test_windows_share_128_tokens_or_half_their_context_and_starts_may_be_written_as_text(tmp_path):
    assert qa.window_stride(512, None) == (64, 128)  # BERT's and ELECTRA's doc_stride at 512 tokens
    assert qa.window_stride(384, None) == (64, 128)
    assert qa.window_stride(128, None) == (62, 31)  # a question of up to 62 leaves 63: half of it
    offsets = [None, (0, 3), (4, 8), None]  # [CLS] "The sky" [SEP]: an answer may end at the window's end
    assert qa.answer_tokens(offsets, 4, 8) == (2, 2) and qa.answer_tokens(offsets, 4, 9) == (0, 0)
    doc = {"data": [{"paragraphs": [{"context": "The sky is blue.", "qas": [
        {"id": "q", "question": "What color?", "answers": [{"text": "blue", "answer_start": "11"}]},
    ]}]}]}  # fmt: skip
    (tmp_path / "s.json").write_text(json.dumps(doc))
    assert qa.read_squad(tmp_path / "s.json")[0].label == [("blue", 11)]


def test_the_best_span_wins_over_windows_and_no_answer_needs_a_better_score():
    contexts = ["alpha beta gamma", "one two"]
    offsets_a = [None, (0, 5), (6, 10), None]  # [CLS] alpha beta [SEP]
    offsets_b = [None, (6, 10), (11, 16), None]  # [CLS] beta gamma [SEP]
    offsets_c = [None, (0, 3), (4, 7), None]
    windows = qa.Windows([], [], [], [0, 0, 1], [offsets_a, offsets_b, offsets_c], [False, False])

    def logits(start, end):
        return np.array([start, end], dtype=np.float32).T  # (T, 2)

    scores = [
        logits([9, 1, 2, 9], [9, 3, 1, 9]),  # outside the context scores high: never an answer
        logits([0, 2, 1, 0], [0, 1, 4, 0]),  # "beta gamma": 2 + 4, the best of question 0
        logits([5, 1, 3, 0], [5, 2, 1, 0]),  # question 1: "two" 3 + 1 beats "one" 1 + 2 and "one two" 1 + 1
    ]
    answers = qa.best_answers(scores, windows, contexts, allow_none=False)
    assert [(a.text, a.start, a.end, a.logit) for a in answers] == [("beta gamma", 6, 16, 6.0), ("two", 4, 7, 4.0)]
    # its probability in its window: softmax over [CLS] and the context, for the start and the end
    assert answers[0].score == pytest.approx(np.exp(2 + 4) / (np.exp([0, 2, 1]).sum() * np.exp([0, 1, 4]).sum()))
    # SQuAD 2.0: [CLS] scores 0 + 0 for question 0 (its lowest over windows) and 10 for question 1
    answers = qa.best_answers(scores, windows, contexts, allow_none=True)
    assert [a.text for a in answers] == ["beta gamma", ""] and answers[1].logit == 10.0
    assert [a.null_margin for a in answers] == [0 - 6.0, 10 - 4.0]  # no answer's logit minus the best span's
    for threshold, second in ((5.9, ""), (6.1, "two")):  # no answer must win by more than the threshold
        answers = qa.best_answers(scores, windows, contexts, allow_none=True, null_threshold=threshold)
        assert [a.text for a in answers] == ["beta gamma", second]
    backwards = [logits([0, 0, 5, 0], [0, 5, 1, 0])]  # the best start lies after the best end: not a span
    one = qa.Windows([], [], [], [0], [offsets_a], [False])
    assert qa.best_answers(backwards, one, contexts[:1], allow_none=False)[0].text == "beta"  # 5 + 1 beats 0 + 5
    long = [None, *((i, i + 1) for i in range(40)), None]  # 40 one-character tokens
    start, end = np.zeros(42), np.zeros(42)
    start[1], end[40], end[10] = 9.0, 9.0, 1.0  # a 40-token span scores best, but answers are at most 30
    (answer,) = qa.best_answers([logits(start, end)], qa.Windows([], [], [], [0], [long], [False]), ["x" * 40], False)
    assert (answer.start, answer.end) == (0, 10)
    empty = qa.Windows([], [], [], [0], [[None, None, None]], [False])  # [CLS] question... [SEP] [SEP]: no context
    for allow_none, score in ((False, 0.0), (True, 1.0)):  # no span: certain only where "no answer" is one
        (answer,) = qa.best_answers([logits([1, 0, 0], [1, 0, 0])], empty, [""], allow_none=allow_none)
        assert (answer.text, answer.score) == ("", score)


@pytest.mark.parametrize("version", ["1.1", "2.0"])
def test_squad_fine_tunes_end_to_end_and_transformers_loads_the_answerer(
    squad_model, tmp_path, version, cli, monkeypatch, capsys
):
    transformers = pytest.importorskip("transformers")
    data = _squad(tmp_path / "data", version)
    task = "squad" if version == "1.1" else "squad_v2"
    cfg = FinetuneConfig(
        model=str(squad_model / "model"), task=task, data=str(data), out=str(tmp_path / "qa"), lr=5e-3, batch_size=16
    )
    results = run(cfg, quiet=True)
    assert results["settings"]["epochs"] == 2 and results["settings"]["max_length"] == 128  # the model's positions
    assert results["examples"] == {"train": 300, "dev": 60} and results["main_metric"] == "dev/f1"
    assert results["median"]["dev"]["f1"] > 0.9  # the answer follows "is"; in 2.0, no such sentence: no answer
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(tmp_path / "qa").eval()
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "qa")
    dev = qa.read_squad(next(data.glob("dev*.json")))
    right = 0
    for e in dev[:20]:
        enc = tok(e.text, e.pair, return_tensors="pt", return_offsets_mapping=True)
        offsets = enc.pop("offset_mapping")[0]
        with torch.no_grad():
            out = model(**enc)
        s, t = int(out.start_logits[0].argmax()), int(out.end_logits[0].argmax())
        answer = "" if s == 0 else e.pair[offsets[s][0] : offsets[t][1]]
        right += answer == (e.label[0][0] if e.label else "")
    assert right >= 18

    # electra predict answers as evaluation does: the same answers give the same scores
    lines = "".join(json.dumps({"id": e.id, "question": e.text, "context": e.pair}) + "\n" for e in dev)
    (tmp_path / "questions.jsonl").write_text(lines)
    out = tmp_path / "answers.jsonl"
    ask = ["predict", "--model", tmp_path / "qa", "--batch-size", "7"]
    result = cli(*ask, "--input", tmp_path / "questions.jsonl", "--output", out)
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    assert [a["text"] for a in answers] == [[e.text, e.pair] for e in dev]
    assert [a["id"] for a in answers] == [e.id for e in dev] and len({e.id for e in dev}) == len(dev)  # ids carried
    assert all(
        e.pair[a["start"] : a["end"]] == a["answer"] and 0 < a["score"] <= 1 for e, a in zip(dev, answers, strict=True)
    )
    golds = [[text for text, _ in e.label] for e in dev]
    assert qa.answer_scores([a["answer"] for a in answers], golds) == results["median"]["dev"]
    from electra.evaluate import run as evaluate_folder  # and evaluate scores the folder as fine-tuning did

    scored = evaluate_folder(tmp_path / "qa", task, str(data), records=True)
    assert scored["metrics"] == results["median"]
    assert [r["prediction"] for r in scored["records"]["dev"]] == [a["answer"] for a in answers]  # as predict answers
    assert [r["answers"] for r in scored["records"]["dev"]] == golds
    # a folder fine-tuned with other windows and threshold is read with them again, unless told otherwise
    import electra.evaluate

    seen = []
    monkeypatch.setattr(electra.evaluate, "encode", lambda *a, stride: seen.append(stride) or encode(*a, stride=stride))
    monkeypatch.setattr(electra.evaluate, "predictions", lambda *a, **k: seen.append(a[-1]) or predictions(*a, **k))
    record = json.loads((tmp_path / "qa" / "results.json").read_text())
    record["config"].update(doc_stride=7, null_threshold=0.5)
    record["settings"]["max_length"] = 96
    (tmp_path / "qa" / "results.json").write_text(json.dumps(record))
    evaluate_folder(tmp_path / "qa", task, str(data))
    evaluate_folder(tmp_path / "qa", task, str(data), doc_stride=9, null_threshold=0.25)
    assert seen == [7, 0.5, 9, 0.25]
    from electra.predict import Predictor  # predict and serve read them again too

    asked = Predictor(tmp_path / "qa")
    assert (asked.limit, asked.stride, asked.null_threshold, asked.allow_no_answer) == (96, 7, 0.5, version == "2.0")
    told = Predictor(tmp_path / "qa", max_length=64, stride=9, null_threshold=0.25, allow_no_answer=False)
    assert (told.limit, told.stride, told.null_threshold, told.allow_no_answer) == (64, 9, 0.25, False)
    shutil.copytree(tmp_path / "qa", tmp_path / "foreign")  # a folder from elsewhere: no record of SQuAD 2.0,
    (tmp_path / "foreign" / "results.json").unlink()  # so a span, unless --allow-no-answer says otherwise
    assert Predictor(tmp_path / "foreign").allow_no_answer is False
    # a stride fine-tuned at 96 tokens that windows of 48 cannot share: the default for 48, said
    record["config"]["doc_stride"] = 40
    (tmp_path / "qa" / "results.json").write_text(json.dumps(record))
    capsys.readouterr()
    assert Predictor(tmp_path / "qa", max_length=48).stride is None
    assert "sharing 40 tokens, more than windows of 48 tokens can; they share 11 (--stride sets it)" in (
        capsys.readouterr().err
    )
    evaluate_folder(tmp_path / "qa", task, str(data), max_length=48)
    assert "they share 11 (--doc-stride sets it)" in capsys.readouterr().err  # evaluate's own option
    assert seen[-2] is None  # encode's stride: the default for 48
    record["config"]["doc_stride"] = 7
    (tmp_path / "qa" / "results.json").write_text(json.dumps(record))
    written = json.loads((tmp_path / "qa" / "predictions.json").read_text())  # {question id: answer}
    assert list(written) == [f"dev-{k}" for k in range(60)] and list(written.values()) == [a["answer"] for a in answers]
    refused = cli(*ask, "--stride", "500", "--format", "jsonl", input=lines)
    assert refused.returncode == 2 and "stride must be 0 to 46 at max-length 96" in refused.stderr  # as fine-tuned
    long_question = json.dumps({"question": "why " * 40, "context": "because"}) + "\n"
    refused = cli(*ask, "--no-truncate", "--format", "jsonl", input=long_question)
    assert "input 1's question is longer than the 46 tokens a question keeps in windows of 96" in refused.stderr
    if version == "2.0":  # the official script's --na-prob-file: no answer exactly where it wins
        odds = json.loads((tmp_path / "qa" / "null_odds.json").read_text())
        assert list(odds) == list(written) and [m > 0 for m in odds.values()] == [a == "" for a in written.values()]
    if version == "2.0":  # a SQuAD 2.0 folder may answer nothing; --no-allow-no-answer always picks a span
        assert any(a["answer"] == "" for a in answers)
        forced = cli(*ask, "--no-allow-no-answer", input=lines.splitlines(True)[0] * 2)
        assert forced.returncode == 2 and "plain lines" in forced.stderr  # stdin is plain lines unless told
        forced = cli(*ask, "--no-allow-no-answer", "--format", "jsonl", input=lines)
        assert all(json.loads(line)["answer"] for line in forced.stdout.splitlines())


def test_bad_squad_input_is_refused_with_a_message(squad_model, tmp_path):
    def refused(message, data, **kw):
        with pytest.raises(TaskError, match=message):
            run(FinetuneConfig(model=str(squad_model / "model"), task="squad", data=str(data), out=str(tmp_path / "o")))

    (tmp_path / "empty").mkdir()
    refused("needs one train\\*.json SQuAD file \\(such as train-v1.1.json\\); found none", tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.json").write_text("{not json")
    (bad / "dev.json").write_text("{}")
    refused("train.json is not JSON", bad)
    (bad / "train.json").write_text('{"data": [{"paragraphs": [{"context": "x", "qas": [{"question": "q"}]}]}]}')
    refused("train.json is not SQuAD JSON: article 1, paragraph 1, question 1 lacks 'answers'", bad)
    (bad / "train.json").write_text('{"data": [{"paragraphs": [{"context": "x", "qas": []}, {"qas": []}]}]}')
    refused("train.json is not SQuAD JSON: article 1, paragraph 2 lacks 'context'", bad)
    (bad / "train.json").write_text('{"data": [{"paragraphs": []}, {"title": "t"}]}')
    refused("train.json is not SQuAD JSON: article 2 lacks 'paragraphs'", bad)
    (bad / "train.json").write_text(
        '{"data": [{"paragraphs": [{"context": "x", "qas": [{"question": "q", "answers": '
        '{"text": ["x"], "answer_start": [0]}}]}]}]}'
    )
    refused("train.json is not SQuAD JSON at article 1, paragraph 1, question 1: expected", bad)
    (bad / "train.json").write_text(
        '{"data": [{"paragraphs": [{"context": "x", "qas": [{"question": "q\\ud800", "id": "7", "answers": []}]}]}]}'
    )
    refused("train.json: question '7' holds a lone surrogate", bad)
    (bad / "train.json").write_text('{"data": {}}')
    refused("is not SQuAD JSON: expected", bad)
    twice = [{"question": "q", "id": "7", "answers": []}] * 2
    (bad / "train.json").write_text(json.dumps({"data": [{"paragraphs": [{"context": "x", "qas": twice}]}]}))
    refused("train.json: question '7' repeats question 1's id; give each its own", bad)
    refused("is a file; put the train and dev SQuAD JSON files", bad / "dev.json")
    assert not (tmp_path / "o").exists()


def test_squad_files_read_with_a_byte_order_mark_one_file_for_evaluation_and_v2_data_noted(tmp_path, capsys):
    from electra.finetune import load_task

    data = _squad(tmp_path / "v2", "2.0", n_train=8, n_dev=4)
    plain = qa.read_squad(data / "dev-v2.0.json")
    marked = tmp_path / "marked.json"
    marked.write_bytes(b"\xef\xbb\xbf" + (data / "dev-v2.0.json").read_bytes())  # as Windows tools save it
    assert qa.read_squad(marked) == plain
    for task, noted in (("squad", True), ("squad_v2", False)):
        got = load_task(FinetuneConfig(model="m", task=task, data=str(marked), out="o"), with_train=False)
        assert got[2] == {"dev": plain}  # evaluate --data FILE reads it, not the hub
        note = "note: 1 of the 4 questions have no answer, as in SQuAD 2.0; --task squad never answers nothing"
        assert (note in capsys.readouterr().err) == noted


def test_squad_through_datasets_reads_as_the_json_files(tmp_path):
    datasets = pytest.importorskip("datasets")
    data = _squad(tmp_path / "json", "2.0", n_train=12, n_dev=4)
    splits = {}
    for split, name in (("train", "train"), ("validation", "dev")):
        rows = qa.read_squad(data / f"{name}-v2.0.json")
        splits[split] = datasets.Dataset.from_dict(
            {
                "id": [f"{name}-{i}" for i in range(len(rows))],
                "question": [e.text for e in rows],
                "context": [e.pair for e in rows],
                "answers": [{"text": [a for a, _ in e.label], "answer_start": [s for _, s in e.label]} for e in rows],
            }
        )
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "saved"))
    train, dev = qa.squad_from_datasets(str(tmp_path / "saved"))
    assert train == qa.read_squad(data / "train-v2.0.json") and dev == qa.read_squad(data / "dev-v2.0.json")
    assert sum(not e.label for e in train) == 3  # a quarter have no answer
    bad = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"question": ["q"], "context": ["c"]})})
    bad["validation"] = bad["train"]
    bad.save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(TaskError, match="bad train lacks 'answers': SQuAD rows have question, context and answers"):
        qa.squad_from_datasets(str(tmp_path / "bad"))


def _logits(start, end):
    return np.array([start, end], dtype=np.float32).T  # (T, 2)


def test_f1_counts_repeated_tokens_as_often_as_both_sides_hold_them():
    """The official script intersects token multisets: "red red" shares 2 tokens with "red red car"."""
    assert qa.answer_f1("red red", "red red car") == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))  # 0.8
    assert qa.answer_f1("red red red", "red") == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))  # 0.5


def test_an_answer_at_the_first_context_token_of_a_window_is_labelled():
    """A context that starts with its answer ("Normans ..." at character 0), or a window whose
    context part starts with it, labels that token, not [CLS]."""
    offsets = [None, (0, 3), (4, 8), None]  # [CLS] "The sky" [SEP]
    assert qa.answer_tokens(offsets, 0, 3) == (1, 1)
    assert qa.answer_tokens(offsets, 0, 8) == (1, 2)


def test_answers_are_at_most_30_tokens_long():
    """BERT's and ELECTRA's rule: end - start + 1 <= max_answer_length (30), so a 31-token span is never given."""
    long = [None, *((i, i + 1) for i in range(40)), None]  # 40 one-character tokens
    start, end = np.zeros(42), np.zeros(42)
    start[1], end[31], end[30] = 9.0, 9.0, 1.0  # tokens 1..31 (31 tokens) score best; 1..30 is the longest allowed
    windows = qa.Windows([], [], [], [0], [long], [False])
    (answer,) = qa.best_answers([_logits(start, end)], windows, ["x" * 40], allow_none=False)
    assert (answer.start, answer.end) == (0, 30)


def test_no_answer_must_beat_the_best_span_not_tie_it():
    """The official SQuAD 2.0 rule: predict "" only where null score - best span score > threshold."""
    offsets = [None, (0, 3), (4, 7), None]
    windows = qa.Windows([], [], [], [0], [offsets], [False])
    tie = [_logits([2, 1, 0, 0], [2, 3, 0, 0])]  # [CLS] 2 + 2 == "one" 1 + 3
    (answer,) = qa.best_answers(tie, windows, ["one two"], allow_none=True, null_threshold=0.0)
    assert (answer.text, answer.null_margin) == ("one", 0.0)


def test_neighbouring_windows_share_exactly_stride_context_tokens(tokenizer):
    tok = copy.deepcopy(tokenizer)  # encode_windows sets truncation on it
    context = " ".join(SENTENCES * 3)
    w = qa.encode_windows(tok, [Example("the movie", context, [])], max_length=24, stride=4)
    parts = [[o for o in offsets if o is not None] for offsets in w.offsets]
    assert len(parts) > 3
    for before, after in itertools.pairwise(parts):
        assert before[-4:] == after[:4] and before[-5] != after[0]


def test_a_question_of_exactly_the_limit_is_not_cut_and_a_longer_word_is_cut_to_the_limit(tokenizer):
    """At max_length 16 a question keeps (16 - 3) // 2 = 6 tokens: six words of one token each are
    whole (not counted as cut); one word of 14 pieces is cut to its first 6."""
    tok = copy.deepcopy(tokenizer)
    context = "the movie was great and a lot of fun"
    exact = Example(" ".join(["the"] * 6), context, [])
    one_word = Example("great" * 5, context, [])  # grea ##t ##g ##rea ##t ...: 14 pieces, one word
    w = qa.encode_windows(tok, [exact, one_word], max_length=16)
    assert w.cut == [False, True]
    for n in (0, 1):
        first = w.question.index(n)
        assert int((w.types[first] == 0).sum()) == 1 + 6 + 1  # [CLS], the question's 6 tokens, [SEP]


def test_the_best_span_may_start_at_a_start_that_is_not_the_top_one():
    """The top start logit (5, "beta") has only a weak end after it (0); starting one token earlier
    ("alpha", 4 + 4) scores more: the N_BEST starts are searched, not the first one only."""
    offsets = [None, (0, 5), (6, 10), None]  # [CLS] alpha beta [SEP]
    windows = qa.Windows([], [], [], [0], [offsets], [False])
    (answer,) = qa.best_answers([_logits([0, 4, 5, 0], [0, 4, 0, 0])], windows, ["alpha beta"], allow_none=False)
    assert (answer.text, answer.logit) == ("alpha", 8.0)


def test_exact_match_and_f1_are_scored_apart():
    """A partly right answer earns F1 but no exact match."""
    scores = qa.answer_scores(["blue car", "red"], [["the big blue car"], ["Red."]])
    assert scores == {"f1": pytest.approx((0.8 + 1) / 2), "exact_match": 0.5}


def test_squad_reading_refuses_a_start_that_is_no_position_and_an_impossible_question_has_no_answer(tmp_path):
    def read(qas):
        (tmp_path / "s.json").write_text(json.dumps({"data": [{"paragraphs": [{"context": "The sky", "qas": qas}]}]}))
        return qa.read_squad(tmp_path / "s.json")

    answers = [{"text": "sky", "answer_start": 4}]
    impossible = {"id": "q", "question": "What?", "is_impossible": True, "answers": answers}
    assert read([impossible])[0].label == [] and read([{**impossible, "is_impossible": False}])[0].label == [("sky", 4)]
    for start in ("four", None, 4.0):
        with pytest.raises(TaskError, match=f"'q' has an answer_start that is no character position: {start!r}"):
            read([{"id": "q", "question": "What?", "answers": [{"text": "sky", "answer_start": start}]}])


def test_windows_label_the_first_answer_and_no_span_for_one_not_at_its_start(tokenizer):
    """Training labels the first gold answer; an answer whose text is not at its answer_start is
    labelled [CLS] (0, 0), never the characters it points at."""
    tok = copy.deepcopy(tokenizer)
    context = "the movie was great and a lot of fun"
    two = Example("what was it", context, [("great", 14), ("fun", 33)])
    moved = Example("what was it", context, [("fun", 14)])
    w = qa.encode_windows(tok, [two, moved], max_length=32)
    assert w.question == [0, 1]
    s, t = w.labels[0]
    assert context[w.offsets[0][s][0] : w.offsets[0][t][1]] == "great"
    assert w.labels[1] == (0, 0)
    # spaces around an answer's text (SQuAD's files have some) reach no neighbouring word
    padded = Example("what was it", context, [(" great ", 13)])
    w = qa.encode_windows(tok, [padded, Example("what was it", context, [(" ", 13)])], max_length=32)
    s, t = w.labels[0]
    assert context[w.offsets[0][s][0] : w.offsets[0][t][1]] == "great" and w.labels[1] == (0, 0)


def test_an_answer_keeps_a_last_token_of_one_character():
    offsets = [None, (0, 4), (4, 5), None]  # [CLS] "blue" "." [SEP]: the answer "blue." ends with the "." token
    assert qa.answer_tokens(offsets, 0, 5) == (1, 2) and qa.answer_tokens(offsets, 0, 4) == (1, 1)


def test_windows_may_share_no_tokens_but_never_a_negative_number():
    assert qa.window_stride(48, 0) == (22, 0)
    with pytest.raises(TaskError, match="the window stride must be 0 to 22 at max-length 48"):
        qa.window_stride(48, -1)


def test_tokens_outside_the_context_take_none_of_the_n_best_places():
    """A question of more than N_BEST tokens that all outscore the context (a model may well score
    them high) still leaves the best span of the context as the answer, as probable as computed
    without overflowing at large logits."""
    question = qa.N_BEST + 5
    offsets = [None] * (1 + question + 1) + [(0, 3), (4, 7), (8, 13)] + [None]  # [CLS] question [SEP] context [SEP]
    start, end = np.full(len(offsets), 1000.0), np.full(len(offsets), 1000.0)
    start[-4:-1], end[-4:-1] = [990.0, 992.0, 991.0], [990.0, 991.0, 993.0]  # "two three": 992 + 993
    windows = qa.Windows([], [], [], [0], [offsets], [False])
    (answer,) = qa.best_answers([_logits(start, end)], windows, ["one two three"], allow_none=False)
    assert (answer.text, answer.logit) == ("two three", 1985.0)
    probs = [np.exp(np.array(p) - 1000.0) for p in ([1000, 990, 992, 991], [1000, 990, 991, 993])]  # [CLS], context
    assert answer.score == pytest.approx(probs[0][2] / probs[0].sum() * probs[1][3] / probs[1].sum())
