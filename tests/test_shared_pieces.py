"""The pieces the three tasks share, each written once: the Torch7 LSTM cell, the vocabulary and its UNK,
the index-or-predicted score, and the runner the CLIs drive their tasks with."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import DATA, ROOT

from gradcam_core import GradCamError
from gradcam_core.cli.program import RunOptions, run_task
from gradcam_core.engine.targets import ClassTarget, score_of
from gradcam_core.nets.lstm import Torch7LSTMCell
from gradcam_core.run.inputs import Inputs
from gradcam_core.run.task import BatchResult, ImageResult, Methods, TargetResult, Task
from gradcam_core.tasks import caption as captioner
from gradcam_core.tasks import vocabulary, vqa
from gradcam_core.tasks.vqa import tokenize

# --------------------------------------------------------------------------------------- LSTM cell


@pytest.mark.parametrize("n, size_in, hidden", [(1, 6, 8), (3, 5, 7), (4, 16, 16)])
def test_lstm_cell_is_pytorchs_cell_with_torchs_gate_order(n, size_in, hidden):
    """An independent check: PyTorch's nn.LSTMCell (gates i, f, g, o) given the same weights with the
    g and o blocks swapped computes the Torch7 cell (i, f, o, g)."""
    torch.manual_seed(0)
    cell = Torch7LSTMCell(size_in, hidden).double()
    reference = torch.nn.LSTMCell(size_in, hidden).double()

    def ifgo(t: torch.Tensor) -> torch.Tensor:
        i, f, o, g = t.chunk(4)
        return torch.cat([i, f, g, o])

    with torch.no_grad():
        reference.weight_ih.copy_(ifgo(cell.i2h.weight))
        reference.bias_ih.copy_(ifgo(cell.i2h.bias))
        reference.weight_hh.copy_(ifgo(cell.h2h.weight))
        reference.bias_hh.copy_(ifgo(cell.h2h.bias))
    x, c, h = (torch.randn(n, k, dtype=torch.float64) for k in (size_in, hidden, hidden))
    c_next, h_next = cell(x, c, h)
    h_ref, c_ref = reference(x, (h, c))
    torch.testing.assert_close(c_next, c_ref)
    torch.testing.assert_close(h_next, h_ref)


def test_lstm_cell_refuses_linears_of_the_wrong_size():
    with pytest.raises(ValueError, match="Linear"):
        Torch7LSTMCell(4, 3, torch.nn.Linear(4, 12), torch.nn.Linear(3, 8))


def test_both_language_models_run_the_same_cell():
    model = captioner.load_checkpoint(DATA / "neuraltalk2" / "mini_caption_model.t7")
    sizes = vqa.VQASizes(6, 8, 2, 16, 10)
    answerer = vqa.QuestionAnswerer(vqa.Vocabulary({1: "a", 2: "UNK"}, tuple("abcdefghij")), sizes)
    assert all(type(cell) is Torch7LSTMCell for cell in [*model.lm.cells, *answerer.encoder.layers])


# -------------------------------------------------------------------------------------- vocabulary


def test_one_vocabulary_class_and_one_unk():
    assert vqa.Vocabulary is captioner.Vocabulary is vocabulary.Vocabulary
    assert captioner.UNK is vocabulary.UNK
    assert tokenize.UNK == vocabulary.UNK  # the tokenizer's own constant (kept torch-free) agrees
    assert type(vqa.load_vocabulary(DATA / "VQA_LSTM_CNN" / "data_prepro.json")) is vocabulary.Vocabulary


def test_vocabulary_inverse_keeps_the_first_id_unless_given():
    words = {1: "a", 2: "dog", 3: "a", 4: "UNK"}
    assert vocabulary.Vocabulary(words).word_to_ix == {"a": 1, "dog": 2, "UNK": 4}
    last = vocabulary.Vocabulary(words, word_to_ix={"a": 3, "dog": 2, "UNK": 4})
    assert last.ids(["a", "cat"]) == [3, 4] and last.n_words == 4


def test_vocabulary_ids_decode_and_answers():
    vocab = vocabulary.Vocabulary({1: "a", 2: "dog"}, ("yes", "no", "yes"))
    assert vocab.ids(["dog", "a"]) == [2, 1]
    with pytest.raises(GradCamError, match="the question word 'cat' is not in the vocabulary, which has no UNK"):
        vocab.ids(["a", "cat"], "question word")
    assert vocab.decode([[1, 2, 0, 1], [2, 3, 1], []]) == ["a dog", "dog", ""]
    assert vocab.answer_index("yes") == 0 and vocab.answer_index("no") == 1 and vocab.answer_index("dog") is None


# ----------------------------------------------------------------------------- index or predicted


def test_score_of_picks_the_index_or_the_first_maximum():
    scores = torch.tensor([[1.0, 3.0, 3.0], [5.0, 0.0, 5.0]], requires_grad=True)
    assert score_of(scores, 2).tolist() == [3.0, 5.0]
    predicted = score_of(scores, None)
    assert predicted.tolist() == [3.0, 5.0]
    (grad,) = torch.autograd.grad(predicted.sum(), scores)
    assert grad.tolist() == [[0, 1, 0], [1, 0, 0]]  # ties: the first maximum


def test_class_and_answer_targets_choose_alike():
    torch.manual_seed(1)
    answer_net = vqa.AnswerNet(4, 4096, 3, 5).double()
    question = torch.randn(1, 4, dtype=torch.float64)
    feature = torch.randn(2, 4096, dtype=torch.float64)
    scores = answer_net(question, feature)
    for index in (None, 0, 4):
        assert torch.equal(vqa.AnswerTarget(answer_net, question, index)(feature), ClassTarget(index)(scores))


# -------------------------------------------------------------------------------------- the runner


class _Net:
    """Resolves one layer, "conv", as the engine asks a net to (``resolve_layer``)."""

    def resolve_layer(self, layer: str | int) -> tuple[object, object]:
        if layer != "conv":
            raise GradCamError(f"no layer {layer!r}")
        return self, self


class _Task(Task[list[str]]):
    """Explains every image for its targets ("x" and "y"); records what the runner asked, in order."""

    name, prefix, target_field, original_layer = "fake", "fake", "target", "conv"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.net, self.model_name = _Net(), "the fake model"

    def targets(self, values, *, option="", strict=False, question=None):
        return list(values)

    def start_lines(self, targets):
        self.calls.append("start")
        return ["started"]

    def explain(self, images, layer, targets, methods):
        self.calls.append(f"explain {tuple(images.shape)} {layer}")
        n, size = images.shape[0], images.shape[-1]
        expl = SimpleNamespace(cam=torch.rand(n, 2, size, size), guided=torch.randn(n, 2, 3, size, size),
                               nonfinite=lambda n: "", method=methods.names[0], unguided=())
        images = [ImageResult([TargetResult(t, {}) for t in targets], {}, lines=[f"image {k} explained"])
                  for k in range(n)]
        return BatchResult({methods.names[0]: expl}, images)


def test_the_runner_checks_the_layer_then_starts_and_writes_each_targets_files(tmp_path):
    task, lines = _Task(), []
    opts = RunOptions("conv", Inputs.single(ROOT / "images" / "cat_dog.jpg", tmp_path), 16, 8, True)
    written = run_task(task, task.targets(["x", "y"]), opts, lines.append)
    assert task.calls == ["start", "explain (1, 3, 16, 16) conv"]
    assert lines == ["started", "image 0 explained"]
    assert sorted(p.name for p in written) == sorted(
        f"fake_{kind}_{name}.png" for kind in ("gcam_hm", "gb", "gb_gcam") for name in "xy")


def test_the_runner_names_another_methods_files_by_its_token(tmp_path):
    task = _Task()
    opts = RunOptions("conv", Inputs.single(ROOT / "images" / "cat_dog.jpg", tmp_path), 16, 8, False,
                      save_overlay=True, methods=Methods(("gradcam",), counterfactual=True))
    written = run_task(task, task.targets(["x"]), opts, lambda line: None)
    assert sorted(p.name for p in written) == ["fake_gb_cf_x.png", "fake_gb_gradcam_cf_x.png",
                                               "fake_gradcam_cf_x.png", "fake_overlay_gradcam_cf_x.png"]


def test_an_unknown_layer_fails_before_start_and_writes_nothing(tmp_path):
    task = _Task()
    opts = RunOptions("nope", Inputs.single(ROOT / "images" / "cat_dog.jpg", tmp_path / "out"), 16, 8, True)
    with pytest.raises(GradCamError, match="no layer 'nope'"):
        run_task(task, task.targets(["x", "y"]), opts, lambda line: None)
    assert task.calls == [] and not Path(tmp_path / "out").exists()
