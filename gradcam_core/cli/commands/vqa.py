"""``visual_question_answering.py`` and ``gradcam-vqa``: their options, as ``main``'s parameters
(python-fire reads them).

The checkout's top-level ``visual_question_answering.py`` (the drop-in for ``th
visual_question_answering.lua``) and the ``gradcam-vqa`` console script run this same ``main``.
Its default files are the original's, relative to the current folder as in Lua.
"""
import sys

from ..app import run_cli, with_many_images_help
from ..options import as_choice, as_input_size, as_int, as_positive_int, as_str, as_switch
from ..paths import check_out_dir, device_for, input_images, input_path

PROTO = "models/VGG_ILSVRC_19_layers_deploy.prototxt"
MODEL = "models/VGG_ILSVRC_19_layers.caffemodel"
IMAGE = "images/cat_dog.jpg"
VQA_MODEL = "VQA_LSTM_CNN/lstm.t7"
VOCAB = "VQA_LSTM_CNN/data_prepro.json"
HINT = "run scripts/download_models.sh vqa to fetch the original models, or pass the file explicitly"


@with_many_images_help("vqa_gb_dog.png", "answer")
def main(
    proto_file=PROTO,
    model_file=MODEL,
    input_sz=224,
    backend="nn",
    layer_name="relu5_4",
    input_image_path=IMAGE,
    question="What animal?",
    answer="",
    save_as_heatmap=1,
    model_path=VQA_MODEL,
    vocab_file=VOCAB,
    input_encoding_size=200,
    rnn_size=512,
    rnn_layers=2,
    common_embedding_size=1024,
    num_output=1000,
    seed=123,
    gpuid=-1,
    out_path="output/",
    batch_size=8,
    save_overlay=0,
):
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

    Args:
        proto_file: Caffe deploy prototxt of the image CNN (VGG-19).
        model_file: Caffe weights (.caffemodel).
        input_sz: side of the square network input.
        backend: accepted for compatibility (nn|cudnn); PyTorch chooses its own kernels.
        layer_name: layer to explain, by Caffe name or loadcaffe's 1-based module index.
        input_image_path: the image, or a folder or glob of images (see above).
        question: the question about the image.
        answer: the answer(s) to explain, comma-separated; '' = the predicted answer.
        save_as_heatmap: 1 = colour heatmap, otherwise the grey Grad-CAM map.
        model_path: the VQA model (lstm.t7).
        vocab_file: the question words and answers (data_prepro.json).
        input_encoding_size: word embedding size of the VQA model.
        rnn_size: LSTM hidden size.
        rnn_layers: number of LSTM layers.
        common_embedding_size: size of the joint question-image embedding.
        num_output: number of answers.
        seed: random seed.
        gpuid: -1 = CPU, N = CUDA device N.
        out_path: output folder (created if missing); per-image subfolders for a folder or glob.
        batch_size: images explained together (one forward) in folder or glob mode.
        save_overlay: 1 = also write vqa_overlay_<answer>.png: the colour heatmap (half) blended over
            the image as the net saw it (half), input_sz x input_sz; 0 = the original's three files.
    """
    from ...extras import require
    from .. import vqa as program

    require("vqa")  # the question tokenizer, before any work
    as_choice("backend", backend, ("nn", "cudnn"))
    out_dir = check_out_dir(as_str(out_path))  # created only when the images are written
    opts = program.VQAOptions(
        proto_file=input_path("proto_file", as_str(proto_file), PROTO, hint=HINT),
        model_file=input_path("model_file", as_str(model_file), MODEL, hint=HINT),
        inputs=input_images("input_image_path", as_str(input_image_path), IMAGE, out_dir),
        model_path=input_path("model_path", as_str(model_path), VQA_MODEL, hint=HINT),
        vocab_file=input_path("vocab_file", as_str(vocab_file), VOCAB, hint=HINT),
        question=as_str(question),
        answers=[as_str(answer)],  # split into answers once the vocabulary is read
        layer_name=as_str(layer_name),
        input_sz=as_input_size("input_sz", input_sz),
        sizes=program.VQASizes(
            input_encoding_size=as_positive_int("input_encoding_size", input_encoding_size),
            rnn_size=as_positive_int("rnn_size", rnn_size),
            rnn_layers=as_positive_int("rnn_layers", rnn_layers),
            common_embedding_size=as_positive_int("common_embedding_size", common_embedding_size),
            num_output=as_positive_int("num_output", num_output),
        ),
        save_as_heatmap=as_int("save_as_heatmap", save_as_heatmap) == 1,
        save_overlay=as_switch("save_overlay", save_overlay),
        device=device_for(as_int("gpuid", gpuid)),
        batch_size=as_positive_int("batch_size", batch_size),
    )
    import torch

    torch.manual_seed(as_int("seed", seed))
    program.run(opts)


def entry() -> None:
    """The ``gradcam-vqa`` console script."""
    sys.argv[0] = "gradcam-vqa"
    run_cli(main)
