"""``python -m gradcam_core.web`` (``gradcam-web``): the local web demo, on the CLIs' own model options.

    python -m gradcam_core.web                      # the bundled SqueezeNet 1.1 on http://127.0.0.1:8000/
    python -m gradcam_core.web -port 8080 -proto_file deploy.prototxt -model_file net.caffemodel
    python -m gradcam_core.web -vqa_model_path VQA_LSTM_CNN/lstm.t7 -vqa_vocab_file VQA_LSTM_CNN/data_prepro.json

This is an entry script, as classification.py is: it reads its options with the command line's
plumbing (``cli.app.run_cli``: the same ``-name value`` syntax, the same one-line errors, exit code 2),
loads the models once (:mod:`.demo`) and runs the server (:mod:`.app`) under uvicorn.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..cli.app import Terminated, run_cli
from ..cli.options import (
    as_float,
    as_input_options,
    as_input_size,
    as_int,
    as_positive_int,
    as_str,
    given,
)
from ..cli.paths import arch_weights_missing, device_for, input_path
from ..data import IMAGES, SQUEEZENET, bundled
from ..errors import GradCamError

DEFAULT_INPUT_SIZE = 224  # -input_sz when not given (an ONNX classifier: its own size)

BUNDLED = bundled(SQUEEZENET)
PROTO = str(BUNDLED / "deploy.prototxt")
MODEL = str(BUNDLED / "squeezenet1_1.caffemodel")
SAMPLES = str(bundled(IMAGES))
VQA_PROTO = "models/VGG_ILSVRC_19_layers_deploy.prototxt"
VQA_MODEL = "models/VGG_ILSVRC_19_layers.caffemodel"
ENABLE = {
    "vqa": "start the server with -vqa_model_path <lstm.t7> -vqa_vocab_file <data_prepro.json> "
           "(and the VQA image net: -vqa_proto_file, -vqa_model_file)",
    "captioning": "start the server with -caption_model_path <a neuraltalk2 checkpoint .t7>",
}


def main(
    port=8000,
    host="127.0.0.1",
    allowed_hosts="",
    proto_file="",
    model_file="",
    arch="",
    layer_name="",
    input_sz=224,
    synset_file="",
    preprocess="",
    mean_value="",
    mean_file="",
    input_scale="",
    channel_order="",
    vqa_model_path="",
    vqa_vocab_file="",
    vqa_proto_file=VQA_PROTO,
    vqa_model_file=VQA_MODEL,
    vqa_layer_name="relu5_4",
    vqa_question="What animal?",
    vqa_input_encoding_size=200,
    vqa_rnn_size=512,
    vqa_rnn_layers=2,
    vqa_common_embedding_size=1024,
    vqa_num_output=1000,
    caption_model_path="",
    caption_layer="30",
    samples=SAMPLES,
    max_upload_mb=20,
    max_pixels=40_000_000,
    max_queue=8,
    max_uploads=16,
    max_connections=64,
    body_timeout=60,
    header_timeout=10,
    gpuid=-1,
    seed=123,
):
    """The Grad-CAM web demo: classification, VQA and captioning in the browser, on your own models.

    python -m gradcam_core.web [-port 8000] [-host 127.0.0.1] [model options]

    Serves http://HOST:PORT/ (the page) and POST /api/explain (the JSON API the page uses; see docs/web.md).
    The models are named by the command-line scripts' own options and loaded once. Classification:
    default the bundled SqueezeNet 1.1 (gradcam_core/data/squeezenet1_1); VQA is on with -vqa_model_path and
    -vqa_vocab_file, captioning with -caption_model_path; a task left off is shown disabled.

    Args:
        port: the TCP port (0 = any free port; the line "Serving on ..." names it).
        host: the address to bind; anything but 127.0.0.1 / localhost / ::1 is said on start.
        allowed_hosts: further Host names to answer, comma-separated (localhost, 127.0.0.1, [::1] and
            -host are always answered; other names are refused against DNS rebinding).
        proto_file: classification: Caffe deploy prototxt (as classification.py).
        model_file: classification: Caffe weights, an ONNX file, or a torchvision state_dict with -arch.
        arch: classification: a torchvision architecture (-model_file is its state_dict).
        layer_name: classification: the default layer ('' = relu5_3 if the net has it, else the last
            layer with a spatial output); the page lists the others.
        input_sz: side of the square network input (every task; default: an ONNX model's own size, else 224).
        synset_file: classification: class names (synset_words.txt format).
        preprocess: classification: caffe or torchvision (default: the model format's).
        mean_value: classification: per-channel means in the net's channel order.
        mean_file: classification: a Caffe mean image (mean.binaryproto).
        input_scale: classification: Caffe's transform_param scale.
        channel_order: classification: bgr or rgb.
        vqa_model_path: VQA: the LSTM checkpoint (lstm.t7); turns VQA on.
        vqa_vocab_file: VQA: its vocabulary (data_prepro.json).
        vqa_proto_file: VQA: the image net's prototxt (VGG-19).
        vqa_model_file: VQA: the image net's caffemodel.
        vqa_layer_name: VQA: the default layer.
        vqa_question: VQA: the question the page starts with.
        vqa_input_encoding_size: VQA: as visual_question_answering.py's -input_encoding_size.
        vqa_rnn_size: VQA: -rnn_size.
        vqa_rnn_layers: VQA: -rnn_layers.
        vqa_common_embedding_size: VQA: -common_embedding_size.
        vqa_num_output: VQA: -num_output.
        caption_model_path: captioning: a neuraltalk2 checkpoint (.t7); turns captioning on.
        caption_layer: captioning: the default layer (a module number or name, as captioning.py -layer).
        samples: a folder whose JPEG and PNG files are offered as samples ('' = none).
        max_upload_mb: the largest upload accepted, in MB (larger: 413).
        max_pixels: the largest image accepted, width x height (larger: 400).
        max_queue: requests in the server at once (waiting or running); past it 503 with Retry-After.
            A request joins it once its whole form has arrived.
        max_uploads: forms being received at once; past it 503 with Retry-After.
        max_connections: open connections; past it a request is answered 503 and its connection closed.
        body_timeout: seconds a form may take to arrive, in all (past it 408).
        header_timeout: seconds a request's line and headers may take to arrive, and the longest pause
            within a form (past it the connection is closed, within a form 408).
        gpuid: -1 = CPU, N = CUDA device N.
        seed: random seed.
    """
    from ..extras import require

    require("web")
    from .demo import ENGINE, Demo, find_samples

    port = as_int("port", port)
    if not 0 <= port <= 65535:
        raise GradCamError(f"-port {port} is not a TCP port (0 to 65535)")
    host = as_str(host).strip()
    if not host:
        raise GradCamError("-host needs an address, e.g. 127.0.0.1")
    extra_hosts = [h.strip() for h in as_str(allowed_hosts).split(",") if h.strip()]
    input_sz = as_input_size("input_sz", input_sz) if given(input_sz) else None  # None: the model's own
    upload = as_positive_int("max_upload_mb", max_upload_mb) << 20
    pixels = as_positive_int("max_pixels", max_pixels)
    limits = {
        "max_queue": as_positive_int("max_queue", max_queue),
        "max_uploads": as_positive_int("max_uploads", max_uploads),
        "max_connections": as_positive_int("max_connections", max_connections),
        "body_seconds": _seconds("body_timeout", body_timeout),
        "header_seconds": _seconds("header_timeout", header_timeout),
    }
    sample_dir = as_str(samples)
    samples_found = find_samples(Path(sample_dir)) if sample_dir else {}
    device = device_for(as_int("gpuid", gpuid))
    import torch

    torch.manual_seed(as_int("seed", seed))

    def load_tasks() -> dict:
        """The models, loaded on the engine thread (see demo.EngineThread)."""
        tasks: dict = {}
        tasks["classification"] = _classification(
            as_str(model_file), as_str(proto_file), as_str(arch), as_str(synset_file), as_str(layer_name),
            as_input_options(preprocess, mean_value, mean_file, input_scale, channel_order), input_sz, device)
        if as_str(vqa_model_path):
            from ..extras import require
            from ..tasks.vqa.model import VQASizes

            require("vqa")
            from .demo import load_vqa

            if not as_str(vqa_vocab_file):
                raise GradCamError("-vqa_model_path needs -vqa_vocab_file (data_prepro.json) too")
            tasks["vqa"] = load_vqa(
                input_path("vqa_model_path", as_str(vqa_model_path), ""),
                input_path("vqa_vocab_file", as_str(vqa_vocab_file), ""),
                input_path("vqa_proto_file", as_str(vqa_proto_file), VQA_PROTO),
                input_path("vqa_model_file", as_str(vqa_model_file), VQA_MODEL),
                sizes=VQASizes(
                    input_encoding_size=as_positive_int("vqa_input_encoding_size", vqa_input_encoding_size),
                    rnn_size=as_positive_int("vqa_rnn_size", vqa_rnn_size),
                    rnn_layers=as_positive_int("vqa_rnn_layers", vqa_rnn_layers),
                    common_embedding_size=as_positive_int("vqa_common_embedding_size", vqa_common_embedding_size),
                    num_output=as_positive_int("vqa_num_output", vqa_num_output),
                ),
                layer=as_str(vqa_layer_name), input_sz=input_sz or DEFAULT_INPUT_SIZE, device=device,
                question=as_str(vqa_question),
            )
        elif as_str(vqa_vocab_file):
            raise GradCamError("-vqa_vocab_file needs -vqa_model_path (the LSTM checkpoint) too")
        if as_str(caption_model_path):
            from .demo import load_captioning

            tasks["captioning"] = load_captioning(input_path("caption_model_path", as_str(caption_model_path), ""),
                                                  layer=as_str(caption_layer), input_sz=input_sz or DEFAULT_INPUT_SIZE,
                                                  device=device)
        return tasks

    tasks = ENGINE.call(load_tasks)
    demo = Demo(tasks, {k: v for k, v in ENABLE.items() if k not in tasks}, samples_found, upload, pixels)
    for name in ("classification", "vqa", "captioning"):
        task = tasks.get(name)
        _say(f"{name}: {task.model_name}, layer {task.default_layer}" if task else f"{name}: off ({ENABLE[name]})")
    serve(demo, host, port, extra_hosts, **limits)


def _classification(given: str, proto_given: str, arch: str, synset: str, layer: str, inputs: Any,
                    input_sz: int | None, device: Any) -> Any:
    """The classifier of the options: the bundled SqueezeNet unless -model_file (or -arch) names another."""
    from ..formats.registry import format_of
    from .demo import load_classification

    if arch and not given:
        raise arch_weights_missing(arch)
    model = input_path("model_file", given, MODEL) if given else Path(MODEL)
    # the bundled prototxt goes with the bundled weights only; a caffemodel without one is load_model's error
    proto = None
    if proto_given and format_of(model, arch).needs_prototxt:
        proto = input_path("proto_file", proto_given, PROTO)
    elif not given:
        proto = Path(PROTO)
    return load_classification(model, proto_file=proto, arch=arch,
                               synset_file=input_path("synset_file", synset, "") if synset else None,
                               inputs=inputs, layer=layer, input_sz=input_sz, device=device)


def _seconds(name: str, value: object) -> float:
    """A time limit: a positive number of seconds (at most a day)."""
    seconds = as_float(name, value)
    if not 0 < seconds <= 86400:
        raise GradCamError(f"-{name} must be a number of seconds above 0 (at most 86400), got {value!r}")
    return seconds


LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
SHUTDOWN_SECONDS = 5  # what the server waits for at shutdown, past the requests it ends itself


def serve(demo, host: str, port: int, allowed_hosts: list[str], *, max_queue: int, max_uploads: int,
          max_connections: int, body_seconds: float, header_seconds: float) -> None:
    """Run the app under uvicorn until Ctrl-C or SIGTERM; print the address (and a warning off loopback).
    The limits: see :func:`main`'s options and :mod:`.connections`."""
    import socket

    import uvicorn

    from .app import InFlight, create_app
    from .connections import Server, protocol

    bind = host.strip("[]")
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((bind, port))
        # listening before "Serving on" is printed: a connection made as soon as the line appears waits in
        # the backlog until uvicorn has started, instead of being refused
        sock.listen(2048)
    except OSError as err:
        sock.close()
        raise GradCamError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    port = sock.getsockname()[1]
    names = [host] if host not in ("0.0.0.0", "::") else []
    in_flight = InFlight()
    app = create_app(demo, allowed_hosts=[*names, *allowed_hosts], max_queue=max_queue, max_uploads=max_uploads,
                     body_seconds=body_seconds, idle_seconds=header_seconds, in_flight=in_flight)
    shown = f"[{bind}]" if family == socket.AF_INET6 else bind
    if host not in LOOPBACK:
        _say(f"warning: listening on {host}, not only on this machine: anyone who can reach {shown}:{port} "
             "can use the demo")
    _say(f"Serving on http://{shown if host not in ('0.0.0.0', '::') else '127.0.0.1'}:{port}/ (Ctrl-C stops)")
    # h11 explicitly (not httptools when installed): the stall timer is a subclass of its protocol
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            http=protocol(header_seconds, max_connections),
                            timeout_graceful_shutdown=SHUTDOWN_SECONDS)
    try:
        Server(config, on_stop=in_flight.stop).run(sockets=[sock])
    except (KeyboardInterrupt, Terminated):  # uvicorn has shut down, then passes the signal on
        _say("stopped")


def _say(line: str) -> None:
    print(line, flush=True)


def entry() -> None:
    """The ``gradcam-web`` console script."""
    sys.argv[0] = "gradcam-web"
    run_cli(main)


if __name__ == "__main__":
    sys.argv[0] = "python -m gradcam_core.web"
    run_cli(main)
