"""VQA Grad-CAM against the Lua original's outputs (tests/data/cases/vqa_*) and on bad input."""
from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pytest
import torch
from conftest import (
    CASES,
    DATA,
    ROOT,
    assert_png_close,
    assert_refused,
    assert_rel_close,
    case_ids,
    load_case,
    oracle_args,
    oracle_tensor,
    run_script,
)

from gradcam_core import GradCamError
from gradcam_core import image as imageops
from gradcam_core.tasks import vqa

VQA_DIR = DATA / "VQA_LSTM_CNN"
LSTM_T7 = VQA_DIR / "lstm.t7"
VOCAB = VQA_DIR / "data_prepro.json"
PROTO = DATA / "models" / "mini_vgg19_v1.prototxt"
CAFFEMODEL = DATA / "models" / "mini_vgg19_v1.caffemodel"
SIZES = vqa.VQASizes(input_encoding_size=6, rnn_size=8, rnn_layers=2, common_embedding_size=16, num_output=10)
SIZE_ARGS = ["-input_encoding_size", "6", "-rnn_size", "8", "-rnn_layers", "2",
             "-common_embedding_size", "16", "-num_output", "10"]
VQA_CASES = case_ids("vqa_")
TENSORS = ("scores", "gradcam_doutput", "gcam_raw", "preprocessed_input", "gcam_scaled", "gb_rgb_raw", "gb_gcam_raw")


@pytest.fixture(scope="module")
def vocab() -> vqa.Vocabulary:
    return vqa.load_vocabulary(VOCAB)


@pytest.fixture(scope="module")
def answerer(vocab) -> vqa.QuestionAnswerer:
    return vqa.load_answerer(LSTM_T7, vocab, SIZES)


@pytest.fixture(scope="module")
def image_net() -> vqa.ImageFeatureNet:
    return vqa.load_image_net(PROTO, CAFFEMODEL)


def case_options(case_id: str) -> dict[str, str]:
    """The oracle command's ``-name value`` pairs."""
    words = shlex.split(load_case(case_id)["command"])[2:]
    return dict(zip(words[::2], words[1::2]))


def case_inputs(case_id: str, answerer: vqa.QuestionAnswerer) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(preprocessed image (1, 3, 224, 224), question feature (1, 32), -answer) of a case."""
    opts = case_options(case_id)
    image = imageops.preprocess(ROOT / opts["-input_image_path"], 224, 224, vqa.DTYPE)[None]
    return image, question_feature(answerer, opts["-question"]), opts["-answer"]


def question_feature(answerer: vqa.QuestionAnswerer, question: str) -> torch.Tensor:
    _, ids, length = answerer.encode(question)
    return answerer.question_feature(torch.tensor([ids]), torch.tensor([length]))


# --------------------------------------------------------------------------- the original's command lines


# The CLI runs of these cases are in the slow set only; their tensors are compared in process below.
SLOW_CLI_CASES = {"vqa_catdog_animal_dog", "vqa_hydrant_color_yellow", "vqa_catdog_oov_question_cat",
                  "vqa_catdog_animal_cat_raw"}


@pytest.mark.parametrize("case_id", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_CLI_CASES else c
                                     for c in VQA_CASES])
def test_oracle_command_line(case_id, tmp_path, vocab):
    """The exact original command, run where its default -model_path and data_prepro.json resolve."""
    script, args = oracle_args(case_id, tmp_path / "out")
    proc = run_script(script, *args, cwd=DATA)
    assert proc.returncode == 0, proc.stderr
    oracle_lines = (CASES / case_id / "stdout.txt").read_text().splitlines()
    expected = [line for line in oracle_lines if not line.startswith(("table: ", "Successfully loaded "))]
    ours = [line for line in proc.stdout.splitlines() if not line.startswith("Successfully loaded ")]
    assert ours[: len(expected)] == expected  # tokens, padded ids, Question / Predicted / Grad-CAM answer
    case = load_case(case_id)
    assert [line for line in ours if line in case["stdout_key_lines"]] == case["stdout_key_lines"]
    notes = ours[len(expected):]
    if vocab.answer_index(case_options(case_id)["-answer"]) is None:  # "" or not an answer: say so
        assert len(notes) == 1 and "using the predicted answer" in notes[0]
    else:
        assert notes == []
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted(case["outputs_sha256"])
    for name in written:
        assert_png_close(tmp_path / "out" / name, CASES / case_id / name)


def test_numeric_answer_stays_a_string(tmp_path):
    """-answer 2 is the answer text "2" (index 8 of the fixture), not answer number 2 ("cat")."""
    proc = run_script(
        "visual_question_answering.py", *SIZE_ARGS, "-proto_file", str(PROTO), "-model_file", str(CAFFEMODEL),
        "-model_path", str(LSTM_T7), "-vocab_file", str(VOCAB), "-question", "How many dogs?",
        "-answer", "2", "-save_as_heatmap", "0", "-out_path", str(tmp_path / "o"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "Grad-CAM answer: \t2" in proc.stdout.splitlines()
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["vqa_gb_2.png", "vqa_gb_gcam_2.png", "vqa_gcam_2.png"]


# ------------------------------------------------------------------------------------ tensors in-process


@pytest.mark.parametrize("case_id", VQA_CASES)
def test_oracle_tensors(case_id, vocab, answerer, image_net):
    image, question, answer = case_inputs(case_id, answerer)
    requested = vocab.answer_index(answer) if answer else None
    expl, scores, indices = vqa.explain_answers(image_net, answerer.answer_net, image, question, [requested], "relu5_4")
    index = indices[0][0]
    assert index == int(oracle_tensor(case_id, "grad_label")[0]) - 1
    feature = expl.scores.clone().requires_grad_()
    (dcnn,) = torch.autograd.grad(vqa.AnswerTarget(answerer.answer_net, question, index)(feature).sum(), feature)
    ours = {
        "scores": scores, "gradcam_doutput": dcnn, "gcam_raw": expl.cam_raw[0], "preprocessed_input": image[0],
        "gcam_scaled": expl.cam[0],
        "gb_rgb_raw": expl.guided[0, 0].flip(0),  # the original saved guided backprop in RGB order
        "gb_gcam_raw": expl.guided_cam[0, 0].flip(0),
    }
    compared = 0
    for name in TENSORS:
        expected = oracle_tensor(case_id, name)
        if expected is not None:
            assert_rel_close(ours[name].detach().numpy(), expected, 1e-4, f"{case_id} {name}")
            compared += 1
    assert compared == (7 if load_case(case_id)["full_tensor_dump"] else 3)


def _swap_layer2(params: dict) -> dict:
    enc = params["encoder_w_q"]
    params["encoder_w_q"] = enc[:4] + enc[6:8] + enc[4:6] + enc[8:]  # layer 2: h2h read before i2h
    return params


def _swap_layer1(params: dict) -> dict:
    enc = params["encoder_w_q"]
    params["encoder_w_q"] = enc[2:4] + enc[:2] + enc[4:]  # layer 1: h2h read before i2h
    return params


def _swap_fusion(params: dict) -> dict:
    mm = params["multimodal_w"]
    params["multimodal_w"] = mm[2:4] + mm[:2] + mm[4:]  # AxB: image Linear read before question Linear
    return params


@pytest.mark.parametrize("mislayout", [_swap_layer1, _swap_layer2, _swap_fusion])
def test_a_wrong_slice_fails_the_oracle(mislayout, vocab, image_net, monkeypatch):
    right = vqa.QuestionAnswerer.torch7_parameters
    monkeypatch.setattr(vqa.QuestionAnswerer, "torch7_parameters", lambda self: mislayout(right(self)))
    wrong = vqa.load_answerer(LSTM_T7, vocab, SIZES)
    _assert_scores_differ(wrong, image_net)


def test_gate_order_ifgo_fails_the_oracle(vocab, image_net):
    """Reading the gates as PyTorch's i, f, g, o instead of i, f, o, g changes the answer scores."""
    model = vqa.load_answerer(LSTM_T7, vocab, SIZES)
    h = SIZES.rnn_size
    with torch.no_grad():
        for layer in model.encoder.layers:
            for p in (layer.i2h.weight, layer.i2h.bias, layer.h2h.weight, layer.h2h.bias):
                p.copy_(torch.cat([p[: 2 * h], p[3 * h :], p[2 * h : 3 * h]]))
    _assert_scores_differ(model, image_net)


def _assert_scores_differ(model: vqa.QuestionAnswerer, image_net: vqa.ImageFeatureNet) -> None:
    case_id = "vqa_hydrant_color_yellow"
    image, question, _ = case_inputs(case_id, model)
    with torch.no_grad():
        scores = model.answer_net(question, image_net(image))
    with pytest.raises(AssertionError):
        assert_rel_close(scores.numpy(), oracle_tensor(case_id, "scores"), 1e-4, "mis-sliced scores")


@pytest.mark.slow  # five explanations; several answers against the oracle: test_batch.py
def test_several_answers_in_one_call_equal_separate_calls(vocab, answerer, image_net):
    image, question, _ = case_inputs("vqa_catdog_animal_dog", answerer)
    answers = [None, vocab.answer_index("dog"), vocab.answer_index("2"), vocab.answer_index("cat")]
    together, scores, indices = vqa.explain_answers(image_net, answerer.answer_net, image, question, answers, "relu5_4")
    assert indices == [[int(scores.argmax()), 0, 7, 1]]
    for k, answer in enumerate(answers):
        alone, _, (index,) = vqa.explain_answers(image_net, answerer.answer_net, image, question, [answer], "relu5_4")
        assert index == [indices[0][k]]
        torch.testing.assert_close(together.cam_raw[:, k], alone.cam_raw[:, 0])
        torch.testing.assert_close(together.guided[:, k], alone.guided[:, 0])
        torch.testing.assert_close(together.guided_cam[:, k], alone.guided_cam[:, 0])


def test_questions_of_different_lengths_batch_like_single_questions(answerer):
    """Right alignment: in a batch, a short question starts late from a zero state."""
    questions = ["What color is the fire hydrant?", "What animal?", "Is this a dog in a room?"]
    encoded = [answerer.encode(q) for q in questions]
    batch = answerer.question_feature(torch.tensor([e[1] for e in encoded]), torch.tensor([e[2] for e in encoded]))
    for n, q in enumerate(questions):
        torch.testing.assert_close(batch[n : n + 1], question_feature(answerer, q))


# ------------------------------------------------------------------------------------- image branch


@pytest.mark.parametrize("name", ["mini_vgg16_v1", "mini_vgg16_v2"])
def test_image_net_ends_with_the_normalised_fc7(name):
    """V1 (prob kept by loadcaffe) and V2 files alike lose prob and fc8 (the original removed two
    modules, which for a V2 file under loadcaffe would have been fc8 and drop7)."""
    net = vqa.load_image_net(DATA / "models" / f"{name}.prototxt", DATA / "models" / f"{name}.caffemodel")
    assert net.cnn.names[-3:] == ["fc7", "relu7", "drop7"]
    feature = net(torch.randn(2, 3, 224, 224, dtype=vqa.DTYPE))
    assert feature.shape == (2, 4096)
    torch.testing.assert_close(feature.norm(dim=1), torch.ones(2, dtype=vqa.DTYPE))


def test_a_cnn_without_a_4096_feature_is_refused():
    with pytest.raises(GradCamError, match="without fc8 this net gives 32 features"):
        vqa.load_image_net(DATA / "models" / "mini_alexnet_v1.prototxt", DATA / "models" / "mini_alexnet_v1.caffemodel")


def test_normalize_eps_is_inside_the_root(image_net):
    """The image net's nn.Normalize(2): x / sqrt(sum x^2 + 1e-10), not x / max(norm, eps)."""
    x = torch.tensor([[1e-6, 0.0], [0.0, 0.0]], dtype=torch.float64)
    y = image_net.normalize(x)
    torch.testing.assert_close(y, torch.tensor([[1e-6 / (1e-12 + 1e-10) ** 0.5, 0.0], [0.0, 0.0]], dtype=torch.float64))


def test_normalize_gradient_is_the_square_roots(image_net):
    """The gradient through the image net's normalisation, bit for bit that of x / sqrt(sum x^2 + eps):
    pow(1/2) has the same forward but a gradient a few ulps off, which moves raw maps (e.g. the
    hydrant case's) in their last bits."""
    torch.manual_seed(0)
    x = torch.randn(16, 4096, dtype=torch.float64) * torch.logspace(-6, 2, 16, dtype=torch.float64)[:, None]
    x.requires_grad_()
    grad_out = torch.randn(16, 4096, dtype=torch.float64)
    (ours,) = torch.autograd.grad(image_net.normalize(x), x, grad_out)
    (sqrt,) = torch.autograd.grad(x / torch.sqrt(x.pow(2).sum(dim=1, keepdim=True) + vqa.NORMALIZE_EPS), x, grad_out)
    assert torch.equal(ours, sqrt)


# ------------------------------------------------------------------------ parameter layout and sizes


@pytest.mark.parametrize("sizes", [SIZES, vqa.VQASizes(3, 5, 1, 7, 4), vqa.VQASizes(4, 6, 3, 9, 2)])
def test_layout_covers_every_parameter_once(sizes):
    vocab = vqa.Vocabulary({1: "a", 2: "UNK"}, tuple("abcdefghij"[: sizes.num_output]))
    model = vqa.QuestionAnswerer(vocab, sizes)
    layout = model.torch7_parameters()
    listed = [p for params in layout.values() for p in params]
    assert len({id(p) for p in listed}) == len(listed) == len(list(model.parameters()))
    totals = {key: sum(p.numel() for p in params) for key, params in layout.items()}
    assert totals == {
        "embedding_w_q": vqa.embedding_size(2, sizes.input_encoding_size),
        "encoder_w_q": vqa.encoder_size(sizes.input_encoding_size, sizes.rnn_size, sizes.rnn_layers),
        "multimodal_w": vqa.multimodal_size(sizes.state_size, sizes.common_embedding_size, sizes.num_output),
    }


def test_a_checkpoint_of_another_kind_is_refused():
    with pytest.raises(GradCamError, match="'embedding_w_q' is missing or is not a numeric tensor"):
        vqa.read_vectors(DATA / "neuraltalk2" / "mini_caption_model.t7")


def test_fixture_vector_lengths(vocab):
    assert {k: v.size for k, v in vqa.read_vectors(LSTM_T7).items()} == {
        "embedding_w_q": 246, "encoder_w_q": 1097, "multimodal_w": 66250}
    assert vocab.n_words == 40 and len(vocab.answers) == 10


@pytest.mark.parametrize("sizes, expected", [
    (vqa.VQASizes(), ["embedding_w_q has 246 values", "need 8200", "-input_encoding_size 6"]),
    (vqa.VQASizes(6), ["encoder_w_q has 1097 values", "-rnn_size 512", "-rnn_size 8"]),
    (vqa.VQASizes(6, 8, 3, 16, 10), ["encoder_w_q", "need 1673", "-rnn_layers 2"]),
    (vqa.VQASizes(6, 8, 2, 1024, 10), ["multimodal_w has 66250 values", "-common_embedding_size 16"]),
    (vqa.VQASizes(6, 8, 2, 16, 1000), ["multimodal_w", "need 83080", "-num_output 10"]),
    (vqa.VQASizes(6, 8), ["multimodal_w", "-common_embedding_size 16 -num_output 10"]),
])
def test_sizes_that_do_not_fit_name_the_option(sizes, expected, vocab):
    with pytest.raises(GradCamError) as err:
        vqa.load_answerer(LSTM_T7, vocab, sizes)
    for text in expected:
        assert text in str(err.value)


def test_a_vocabulary_of_another_size_is_named(vocab):
    smaller = vqa.Vocabulary({i: w for i, w in vocab.words.items() if i <= 39}, vocab.answers)
    with pytest.raises(GradCamError, match="-vocab_file with 40 words"):
        vqa.load_answerer(LSTM_T7, smaller, SIZES)


def test_num_output_must_match_the_answers(vocab):
    fewer = vqa.Vocabulary(vocab.words, vocab.answers[:9])
    with pytest.raises(GradCamError, match="-num_output 10 does not match the vocabulary, which lists 9 answers"):
        vqa.load_answerer(LSTM_T7, fewer, SIZES)


# ------------------------------------------------------------------------------------ vocabulary files


def _write_vocab(tmp_path: Path, mutate) -> Path:
    data = json.loads(VOCAB.read_text())
    mutate(data)
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("ix_to_ans"), "'ix_to_ans' is missing"),
    (lambda d: d["ix_to_word"].pop("7"), "keys must be"),
    (lambda d: d["ix_to_word"].update({"40": "unk"}), "no 'UNK' entry"),
    (lambda d: d["ix_to_ans"].update({"3": 3}), "values must be strings"),
])
def test_bad_vocabularies(mutate, message, tmp_path):
    with pytest.raises(GradCamError, match=message):
        vqa.load_vocabulary(_write_vocab(tmp_path, mutate))


def test_a_vocabulary_that_is_a_pipe_or_folder_is_refused_not_waited_on(tmp_path):
    """Through the library too (the CLI refuses them earlier): reading a FIFO would block forever."""
    fifo = tmp_path / "data_prepro.json"
    os.mkfifo(fifo)
    with pytest.raises(GradCamError, match="not a regular file"):
        vqa.load_vocabulary(fifo)
    with pytest.raises(GradCamError, match="directory"):
        vqa.load_vocabulary(tmp_path)


def test_vocabulary_reads_the_fixture(vocab):
    assert vocab.word_to_ix["what"] == 1 and vocab.word_to_ix["UNK"] == 40
    assert vocab.answers[:3] == ("dog", "cat", "green") and vocab.answer_index("2") == 7
    assert vocab.answer_index("purple") is None


# ------------------------------------------------------------------------------ bad input, end to end


def _corrupt_t7(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "lstm.t7"
    path.write_bytes(LSTM_T7.read_bytes()[:300])
    return {"-model_path": str(path)}


def _vocab_without_unk(tmp_path: Path) -> dict[str, str]:
    return {"-vocab_file": str(_write_vocab(tmp_path, lambda d: d["ix_to_word"].update({"40": "zebra"})))}


def _not_json(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "vocab.json"
    path.write_text('{"ix_to_word": {"1": "what"')
    return {"-vocab_file": str(path)}


@pytest.mark.parametrize("make_args, message", [
    (lambda tmp: {"-model_path": str(tmp / "missing.t7")}, "-model_path"),
    (_corrupt_t7, "lstm.t7: truncated"),
    (_vocab_without_unk, "no 'UNK' entry"),
    (_not_json, "not a valid JSON file"),
    (lambda tmp: {"-question": "  "}, "is empty"),
    (lambda tmp: {"-layer_name": "relu9_9"}, "unknown layer 'relu9_9'"),
    (lambda tmp: {"-rnn_size": "512"}, "-rnn_size 8"),
    (lambda tmp: {"-num_output": "1000"}, "need 83080"),
])
def test_bad_input_exits_2_with_one_line(make_args, message, tmp_path):
    out = tmp_path / "out"
    options = {**dict(zip(SIZE_ARGS[::2], SIZE_ARGS[1::2])), "-proto_file": str(PROTO), "-model_file": str(CAFFEMODEL),
               "-model_path": str(LSTM_T7), "-vocab_file": str(VOCAB), "-out_path": str(out), **make_args(tmp_path)}
    words = [w for kv in options.items() for w in kv]
    assert_refused(run_script("visual_question_answering.py", *words), out, re.escape(message))


def test_fixture_without_size_options_names_the_option(tmp_path):
    """The fixture with the original's default sizes: the message names the option and the size needed."""
    out = tmp_path / "out"
    proc = run_script("visual_question_answering.py", "-proto_file", str(PROTO), "-model_file", str(CAFFEMODEL),
                      "-model_path", str(LSTM_T7), "-vocab_file", str(VOCAB), "-out_path", str(out))
    assert_refused(proc, out, "embedding_w_q has 246 values; -input_encoding_size 200 and a 40-word vocabulary need 8200")
    assert "-input_encoding_size 6" in proc.stderr


def test_missing_default_models_give_the_download_hint(tmp_path):
    proc = run_script("visual_question_answering.py", "-out_path", str(tmp_path / "out"), cwd=tmp_path)
    assert_refused(proc, tmp_path / "out", "scripts/download_models.sh vqa")


# --------------------------------------------------------------------------------------------------
# data_prepro.json: hostile JSON is one line, a byte-order mark is fine


@pytest.mark.parametrize("text, message", [
    ("[" * 200_000 + "]" * 200_000, r"nested too deeply"),
    ('{"ix_to_word": {"1": "UNK"}, "ix_to_ans": {"1": "dog"}, "n": ' + "9" * 100_000 + "}",
     r"not a valid JSON file \(a number of 100000 digits"),
    ('{"ix_to_word": {"1": "UNK"}, "ix_to_ans": {"1": "dog"}, "n": ' + "9" * 100_000 + ".5}",
     r"not a valid JSON file \(the number 9+\.\.\. is too large for a float"),
    ('{"ix_to_word": {"1": "UNK"}, "ix_to_ans": {"1": "dog"}, "n": NaN}', r"NaN is not a JSON number"),
], ids=["deep", "long int", "long float", "NaN"])
def test_hostile_vocabulary_json_is_one_line(tmp_path, text, message):
    """RecursionError and ValueError ended as 'internal error', exit 1; a huge float became infinity."""
    path = tmp_path / "data_prepro.json"
    path.write_text(text)
    with pytest.raises(GradCamError) as err:
        vqa.load_vocabulary(path)
    assert re.search(message, str(err.value)) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_vocabulary_with_a_byte_order_mark_reads_as_without(tmp_path):
    path = tmp_path / "data_prepro.json"
    path.write_bytes(b"\xef\xbb\xbf" + VOCAB.read_bytes())
    with_bom, without = vqa.load_vocabulary(path), vqa.load_vocabulary(VOCAB)
    assert with_bom.answers == without.answers and with_bom.word_to_ix == without.word_to_ix

