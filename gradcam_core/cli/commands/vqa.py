"""``visual_question_answering.py`` and ``gradcam-vqa``: their options (:data:`OPTIONS`, from
:mod:`..optiontable`) and ``main``, which python-fire runs.

The checkout's top-level ``visual_question_answering.py`` (the drop-in for ``th
visual_question_answering.lua``) and the ``gradcam-vqa`` console script run this same ``main``.
Its default files are the original's, relative to the current folder as in Lua.
"""
from types import SimpleNamespace

from .. import optiontable as opt
from ..app import console_script, seed_torch, with_many_images_help
from ..paths import check_out_dir, input_path
from .common import run_fields

PROTO = opt.VQA_PROTO_FILE.default
MODEL = opt.VQA_MODEL_FILE.default
IMAGE = opt.INPUT_IMAGE_PATH.default
VQA_MODEL = "VQA_LSTM_CNN/lstm.t7"
VOCAB = "VQA_LSTM_CNN/data_prepro.json"
HINT = "run scripts/download_models.sh vqa to fetch the original models, or pass the file explicitly"

OPTIONS = opt.OptionTable(
    opt.VQA_PROTO_FILE,
    opt.VQA_MODEL_FILE,
    opt.INPUT_SZ,
    opt.BACKEND,
    opt.VQA_LAYER_NAME,
    opt.INPUT_IMAGE_PATH,
    opt.QUESTION,
    opt.Option("answer", "", "the answer(s) to explain, comma-separated; '' = the predicted answer."),
    opt.SAVE_AS_HEATMAP,
    opt.Option("model_path", VQA_MODEL, "the VQA model (lstm.t7)."),
    opt.Option("vocab_file", VOCAB, "the question words and answers (data_prepro.json)."),
    *opt.VQA_SIZES,
    opt.SEED,
    opt.GPUID,
    opt.OUT_PATH,
    opt.BATCH_SIZE,
    opt.save_overlay("vqa_overlay_<answer>.png"),
    *opt.METHOD_OPTIONS,
    opt.LAYER_LAYOUT,
)


@OPTIONS.command
@with_many_images_help("vqa_gb_dog.png", "answer")
def main(v: SimpleNamespace) -> None:
    """Grad-CAM, Guided Backprop and Guided Grad-CAM for an answer of the VQA_LSTM_CNN model.

    Options, names and defaults as the Lua script, plus ``-vocab_file`` (the original read
    ``VQA_LSTM_CNN/data_prepro.json`` unconditionally) and ``-batch_size``. ``-answer ''`` (or an answer
    the model does not know) explains the predicted answer. Several answers from one forward pass:
    ``-answer dog,cat`` (comma-separated; a value that is itself one of the model's answers stays one
    answer, commas and all) or ``--answer='["dog", "cat"]'``. Writes ``vqa_gcam_hm_<answer>.png``
    (``vqa_gcam_<answer>.png`` with ``-save_as_heatmap 0``), ``vqa_gb_<answer>.png`` and
    ``vqa_gb_gcam_<answer>.png`` for each answer into ``-out_path``; with ``-save_overlay 1`` also
    ``vqa_overlay_<answer>.png``, the heatmap blended over the image.

    {many_images}

    {cam_methods}
    """
    from ...extras import require
    from .. import vqa as program

    require("vqa")  # the question tokenizer, before any work
    out_dir = check_out_dir(v.out_path)  # created only when the images are written
    opts = program.VQAOptions(
        proto_file=input_path("proto_file", v.proto_file, PROTO, hint=HINT),
        model_file=input_path("model_file", v.model_file, MODEL, hint=HINT),
        model_path=input_path("model_path", v.model_path, VQA_MODEL, hint=HINT),
        vocab_file=input_path("vocab_file", v.vocab_file, VOCAB, hint=HINT),
        question=v.question,
        answers=[v.answer],  # split into answers once the vocabulary is read
        layer_name=v.layer_name,
        sizes=program.VQASizes(**opt.subset(v, opt.VQA_SIZES)),
        **run_fields(v, IMAGE, out_dir),
    )
    seed_torch(v.seed)
    program.run(opts)


entry = console_script(main, "gradcam-vqa")
