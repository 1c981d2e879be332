"""Captioning Grad-CAM against the oracle (the unmodified captioning.lua on the neuraltalk2 fixture):
the command lines as the original ran them, the language model's tensors, the gradient into the image
feature and the raw map; then the caption rules, batching, a cudnn/CUDA-typed checkpoint and bad input."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
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
    oracle_args,
    oracle_tensor,
    overriding,
    run_script,
)
from t7_writer import Writer, from_loaded

from gradcam_core import GradCamError
from gradcam_core import image as imageops
from gradcam_core.formats.torch7 import T7Object, T7Table, load_t7
from gradcam_core.formats.torch7.modules import convert_module, sequential_to_net
from gradcam_core.tasks.caption import (
    DEFAULT_CAPTION,
    CaptionTarget,
    LanguageModel,
    Vocabulary,
    caption_labels,
    caption_score,
    decode_captions,
    encode_caption,
    explain_captions,
    load_checkpoint,
)

CHECKPOINT = DATA / "neuraltalk2" / "mini_caption_model.t7"
CAP_CASES = case_ids("cap_")
# Lines of the oracle's stdout that only the Lua runtime printed (print(opt), the clone notice).
LUA_ONLY = ("table: 0x", "constructing clones inside the LanguageModel")


@pytest.fixture(scope="module")
def model():
    return load_checkpoint(CHECKPOINT)


def case_options(case_id: str) -> dict[str, str]:
    """The case's command-line options (paths mapped to this repo), without the leading '-'."""
    _, args = oracle_args(case_id, Path("unused"))
    return {name.lstrip("-"): value for name, value in zip(args[::2], args[1::2])}


def case_image(case_id: str) -> torch.Tensor:
    return imageops.preprocess(case_options(case_id)["input_image_path"], 224, 224)[None]


def case_caption(case_id: str) -> str | None:
    """The caption the case explains: its -caption, the default, or None (-caption '': generated)."""
    return case_options(case_id).get("caption", DEFAULT_CAPTION) or None


def oracle_labels(case_id: str) -> torch.Tensor:
    return torch.from_numpy(oracle_tensor(case_id, "lm_labels")).long()  # (16, 1)


# --------------------------------------------------------------------------------------------------
# The original's command lines


@pytest.mark.parametrize("case_id", CAP_CASES)
def test_command_line_matches_oracle(case_id, tmp_path):
    script, args = oracle_args(case_id, tmp_path)
    proc = run_script(script, *args)
    assert proc.returncode == 0, proc.stderr
    expected = [
        line for line in (CASES / case_id / "stdout.txt").read_text().splitlines()
        if not line.startswith(LUA_ONLY)
    ]
    assert proc.stdout.splitlines() == expected
    oracle_pngs = sorted(p.name for p in (CASES / case_id).glob("*.png"))
    assert sorted(p.name for p in tmp_path.iterdir()) == oracle_pngs
    for name in oracle_pngs:
        assert_png_close(tmp_path / name, CASES / case_id / name)


# --------------------------------------------------------------------------------------------------
# The library against the oracle's tensors


@pytest.mark.parametrize("case_id", CAP_CASES)
def test_labels_and_logprobs_match_oracle(model, case_id):
    feature = model.cnn(case_image(case_id))
    caption = case_caption(case_id)
    if caption is None:
        caption = decode_captions(model.vocab, model.lm.sample(feature))[0]
    labels = caption_labels(model.vocab, caption, model.lm.seq_length)[:, None]
    assert torch.equal(labels, oracle_labels(case_id))
    logp = model.lm(feature, labels).detach().numpy()
    expected = oracle_tensor(case_id, "lm_logprobs")
    assert logp.shape == expected.shape == (18, 1, 31)
    computed = 2 + int((labels != 0).sum())  # image, START, one step per word
    assert_rel_close(logp[:computed], expected[:computed], 1e-4, f"{case_id} logprobs")
    # Skipped steps: zeros here; the original left uninitialised memory there (mostly zeros too).
    assert not logp[computed:].any()


@pytest.mark.parametrize("case_id", CAP_CASES)
def test_gradient_into_feature_and_raw_map_match_oracle(model, case_id):
    image = case_image(case_id)
    feature = model.cnn(image).detach().requires_grad_()
    target = CaptionTarget(model, case_caption(case_id))
    (dcnn,) = torch.autograd.grad(target(feature).sum(), feature)
    assert_rel_close(dcnn.numpy(), oracle_tensor(case_id, "gradcam_doutput"), 1e-4, f"{case_id} dcnn")
    expl, _ = explain_captions(model, image, "30", [case_caption(case_id)])
    assert_rel_close(expl.cam_raw[0, 0].numpy(), oracle_tensor(case_id, "gcam_raw"), 1e-4, f"{case_id} gcam_raw")


def test_full_dump_case_matches_every_oracle_tensor(model):
    case_id = "cap_catdog_default"
    image = case_image(case_id)
    assert_rel_close(image[0].numpy(), oracle_tensor(case_id, "preprocessed_input"), 1e-6, "preprocessed")
    expl, _ = explain_captions(model, image, "30", [DEFAULT_CAPTION])
    gb_rgb = expl.guided[0, 0].flip(0)
    assert_rel_close(expl.cam[0, 0].numpy(), oracle_tensor(case_id, "gcam_scaled"), 1e-4, "gcam_scaled")
    assert_rel_close(gb_rgb.numpy(), oracle_tensor(case_id, "gb_rgb_raw"), 1e-4, "gb_rgb_raw")
    assert_rel_close((gb_rgb * expl.cam[0, 0]).numpy(), oracle_tensor(case_id, "gb_gcam_raw"), 1e-4, "gb_gcam_raw")


def _with_gates(lm: LanguageModel, order: list[int]) -> LanguageModel:
    """A copy of lm whose i2h/h2h gate blocks are permuted (as a port with the wrong order would load)."""
    def blocks(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t.chunk(4)[k] for k in order])

    def permuted(linear: torch.nn.Linear) -> torch.nn.Linear:
        out = torch.nn.Linear(linear.in_features, linear.out_features)
        out.weight, out.bias = torch.nn.Parameter(blocks(linear.weight)), torch.nn.Parameter(blocks(linear.bias))
        return out

    return LanguageModel(lm.lookup.weight, [permuted(c.i2h) for c in lm.cells], [permuted(c.h2h) for c in lm.cells],
                         list(lm.drops), lm.final_drop, lm.decoder, lm.seq_length)


def test_oracle_comparisons_catch_gate_order_and_position_mistakes(model):
    """The oracle checks above have teeth: PyTorch's gate order (i, f, g, o) or scoring the rows one
    step off gives errors far above their 1e-4 tolerance."""
    case_id = "cap_catdog_default"
    feature = model.cnn(case_image(case_id)).detach()
    labels = oracle_labels(case_id)
    rows = 2 + int((labels != 0).sum())
    wrong_order = _with_gates(model.lm, [0, 1, 3, 2])(feature, labels).numpy()[:rows]
    with pytest.raises(AssertionError):
        assert_rel_close(wrong_order, oracle_tensor(case_id, "lm_logprobs")[:rows], 1e-2, "gate order")
    shifted = torch.cat([labels[1:], torch.zeros_like(labels[:1])])  # words scored one row early
    feature.requires_grad_()
    (dcnn,) = torch.autograd.grad(caption_score(model.lm, feature, shifted).sum(), feature)
    with pytest.raises(AssertionError):
        assert_rel_close(dcnn.numpy(), oracle_tensor(case_id, "gradcam_doutput"), 1e-2, "shifted")


# --------------------------------------------------------------------------------------------------
# Caption <-> labels


@pytest.mark.parametrize("caption,words", [
    ("a dog and a cat", ["a", "dog", "and", "a", "cat"]),
    ("A zebra, and a dog!", ["UNK", "UNK", "and", "a", "dog"]),   # case kept: "A" is not "a"
    ("dog's  toilet-sink", ["dog", "UNK", "toilet", "sink"]),     # punctuation splits and vanishes
    ("café dog2 ...", ["UNK", "UNK"]),                            # only ASCII letters/digits form words
    ("", []),
    ("?!", []),
])
def test_caption_words_follow_lua_pattern(model, caption, words):
    vocab = model.vocab
    assert [vocab.words[i] for i in encode_caption(vocab, caption, 16)] == words
    labels = caption_labels(vocab, caption, 16)
    assert labels.shape == (16,) and labels.dtype == torch.long
    assert labels[len(words):].eq(0).all()


def test_sixteen_words_fit_seventeen_are_refused(model):
    assert (caption_labels(model.vocab, " ".join(["dog"] * 16), 16) == 2).all()
    with pytest.raises(GradCamError, match=r"17 words.*at most 16"):
        CaptionTarget(model, " ".join(["dog"] * 17))


def test_unknown_word_needs_unk():
    vocab = Vocabulary({1: "a", 2: "dog"})
    assert encode_caption(vocab, "a dog", 16) == [1, 2]  # no UNK needed, none asked for
    with pytest.raises(GradCamError, match="the caption word 'cat' is not in the vocabulary.*no UNK"):
        encode_caption(vocab, "a cat", 16)


def test_decode_stops_at_the_first_non_word(model):
    end = model.lm.vocab_size + 1  # 31: END
    columns = [[2, 3, end, 1], [1, 2, 2, 30], [end, 1, 2, 3], [0, 2, 2, 4]]
    seq = torch.tensor(columns).t()  # (T, N): one caption per column
    assert decode_captions(model.vocab, seq) == ["dog and", "a dog dog UNK", "", ""]


def test_caption_without_words_gives_zero_maps(model):
    expl, _ = explain_captions(model, case_image("cap_catdog_default"), "30", ["?!"])
    assert not expl.cam_raw.any() and not expl.guided.any()


# --------------------------------------------------------------------------------------------------
# Library behaviour


def test_several_captions_in_one_call_equal_separate_calls(model):
    image = torch.cat([case_image("cap_catdog_default"), case_image("cap_tabby_raw")])
    captions = [DEFAULT_CAPTION, None, "a cat sitting next to a dog", "A zebra, and a dog!"]
    together, generated = explain_captions(model, image, "relu5_3", captions)
    assert together.cam_raw.shape == (2, 4, 14, 14)
    for k, caption in enumerate(captions):
        alone, generated_alone = explain_captions(model, image, 30, [caption])
        assert generated_alone == generated
        for field in ("cam_raw", "cam", "guided", "guided_cam"):
            torch.testing.assert_close(getattr(together, field)[:, k], getattr(alone, field)[:, 0],
                                       rtol=1e-5, atol=1e-6, msg=f"{field} of caption {k}")


def test_layer_by_name_equals_layer_by_number(model):
    image = case_image("cap_catdog_default")
    by_name, _ = explain_captions(model, image, "relu5_3", [DEFAULT_CAPTION])
    by_number, _ = explain_captions(model, image, "30", [DEFAULT_CAPTION])
    torch.testing.assert_close(by_name.cam_raw, by_number.cam_raw, rtol=0, atol=0)


def _cudnn_name(typename: str) -> str:
    """The class names cudnn has, as neuraltalk2's GPU checkpoint used them."""
    cudnn = {"nn.SpatialConvolution", "nn.SpatialMaxPooling", "nn.ReLU"}
    return "cudnn." + typename[3:] if typename in cudnn else typename


def test_cudnn_checkpoint_with_cuda_storages_gives_the_same_results(model, tmp_path):
    """A checkpoint as neuraltalk2's GPU release stores it: cudnn module classes, CudaTensor storages,
    conv weights (nOut, nIn*kH*kW)."""
    root = load_t7(CHECKPOINT)
    for module in root["protos"]["cnn"]["modules"].values():
        if module.typename == "nn.SpatialConvolution":
            module.fields["weight"] = module["weight"].reshape(module["nOutputPlane"], -1)
            module.fields["groups"] = 1
    path = tmp_path / "gpu_model.t7"
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # the writer recurses through the nngraph node graph
    try:
        path.write_bytes(Writer().value(from_loaded(root, _cudnn_name, cuda=True)).bytes())
    finally:
        sys.setrecursionlimit(limit)
    assert b"cudnn.SpatialConvolution" in path.read_bytes() and b"torch.CudaStorage" in path.read_bytes()

    gpu = load_checkpoint(path)
    image = case_image("cap_catdog_default")
    ours, generated = explain_captions(gpu, image, "30", [DEFAULT_CAPTION])
    ref, generated_ref = explain_captions(model, image, "30", [DEFAULT_CAPTION])
    assert generated == generated_ref
    for field in ("cam_raw", "guided"):
        torch.testing.assert_close(getattr(ours, field), getattr(ref, field), rtol=0, atol=0)


def test_a_checkpoint_asking_for_a_billion_time_steps_is_refused_at_load(tmp_path):
    """seq_length is tied to no weight: a file could make the sampler run 10^9 steps (a hang)."""
    root = load_t7(CHECKPOINT)
    root["protos"]["lm"].fields["seq_length"] = 10**9
    path = tmp_path / "huge_seq_length.t7"
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # the writer recurses through the nngraph node graph
    try:
        path.write_bytes(Writer().value(from_loaded(root)).bytes())
    finally:
        sys.setrecursionlimit(limit)
    with pytest.raises(GradCamError, match=r"seq_length' is 1000000000; a captioning model takes at most 1000"):
        load_checkpoint(path)


# --------------------------------------------------------------------------------------------------
# Torch7 module conversion


def test_torch7_module_conversion():
    def module(typename: str, **fields) -> T7Object:
        return T7Object(typename, T7Table(fields))

    x = torch.randn(2, 3, 4, 5)
    view = convert_module(module("nn.View", size=np.array([-1]), numInputDims=3), "view")
    assert view(x).shape == (2, 60)
    old_dropout = convert_module(module("nn.Dropout", p=0.25), "dropout")  # saved before "v2": scales at eval
    torch.testing.assert_close(old_dropout(x), 0.75 * x)
    assert torch.equal(convert_module(module("nn.Dropout", p=0.25, v2=True), "dropout")(x), x)
    norm = convert_module(module("nn.Normalize", p=2, eps=1e-10), "normalize")
    torch.testing.assert_close(norm(x).flatten(1).norm(dim=1), torch.ones(2))
    weight = np.arange(8 * 3 * 9, dtype=np.float32).reshape(8, 27)  # (nOut, nIn*kH*kW), grouped cudnn
    conv = convert_module(module("cudnn.SpatialConvolution", nInputPlane=6, nOutputPlane=8, kW=3, kH=3,
                                 dW=1, dH=1, padW=1, padH=1, groups=2, weight=weight), "conv")
    assert conv.weight.shape == (8, 3, 3, 3) and conv.bias is None and conv.groups == 2


def test_unsupported_module_is_named_with_its_index():
    root = load_t7(CHECKPOINT)
    root["protos"]["cnn"]["modules"][3].typename = "nn.SpatialBatchNormalization"
    unsupported = r"protos\.cnn module 3 is a nn\.SpatialBatchNormalization, which is not supported"
    with pytest.raises(GradCamError, match=unsupported):
        sequential_to_net(root["protos"]["cnn"], "protos.cnn")
    with pytest.raises(GradCamError, match=r"cat_dog\.jpg is not a neuraltalk2 checkpoint \(not a readable Torch7"):
        load_checkpoint(ROOT / "images" / "cat_dog.jpg")


# --------------------------------------------------------------------------------------------------
# Bad input: one line on stderr, exit 2, nothing written


def _bad_run(tmp_path: Path, *args: str) -> str:
    """Run with the fixture checkpoint and image plus ``args``; check the failure; return stderr."""
    out = tmp_path / "out"
    defaults = ["-model_path", str(CHECKPOINT), "-input_image_path", str(ROOT / "images" / "cat_dog.jpg")]
    proc = run_script("captioning.py", *overriding(*defaults, *args, "-out_path", f"{out}/"), cwd=tmp_path)
    return assert_refused(proc, out, "")


def test_not_a_neuraltalk2_checkpoint(tmp_path):
    err = _bad_run(tmp_path, "-model_path", str(DATA / "VQA_LSTM_CNN" / "lstm.t7"))
    assert "not a neuraltalk2 checkpoint" in err and "embedding_w_q" in err


@pytest.mark.parametrize("layer", ["41", "0", "relu9_9"])
def test_unknown_layer(tmp_path, layer):
    err = _bad_run(tmp_path, "-layer", layer)
    assert "1..40" in err and "30=relu5_3" in err


def test_too_long_caption(tmp_path):
    err = _bad_run(tmp_path, "-caption", " ".join(["dog"] * 17))
    assert "17 words" in err and "at most 16" in err


def test_missing_image(tmp_path):
    err = _bad_run(tmp_path, "-input_image_path", str(tmp_path / "nope.jpg"))
    assert "-input_image_path" in err and "not found" in err


@pytest.mark.skipif((ROOT / "neuraltalk2" / "model_id1-501-1448236541.t7").exists(), reason="model downloaded")
def test_missing_default_checkpoint_says_how_to_get_it(tmp_path):
    proc = run_script("captioning.py", "-out_path", f"{tmp_path}/out/", cwd=tmp_path)
    assert proc.returncode == 2
    assert "scripts/download_models.sh captioning" in proc.stderr and len(proc.stderr.splitlines()) == 1
