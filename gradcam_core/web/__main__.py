"""``python -m gradcam_core.web`` (``gradcam-web``): the local web demo, on the CLIs' own model options.

    python -m gradcam_core.web                      # the bundled SqueezeNet 1.1 on http://127.0.0.1:8000/
    python -m gradcam_core.web -port 8080 -proto_file deploy.prototxt -model_file net.caffemodel
    python -m gradcam_core.web -vqa_model_path VQA_LSTM_CNN/lstm.t7 -vqa_vocab_file VQA_LSTM_CNN/data_prepro.json

This is an entry script, as classification.py is: it reads its options with the command line's
plumbing (``cli.app.run_cli``: the same ``-name value`` syntax, the same one-line errors, exit code 2),
loads the models once (:mod:`.demo`) and runs the server (:mod:`.app`) under uvicorn.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..cli import optiontable as opt
from ..cli.app import Terminated, console_script, seed_torch
from ..cli.options import as_float, as_input_options, as_int, as_positive_int, as_str
from ..cli.paths import arch_weights_missing, device_for, input_path
from ..data import IMAGES, SQUEEZENET, bundled
from ..errors import GradCamError

DEFAULT_INPUT_SIZE = opt.MODEL_INPUT_SZ.default  # -input_sz when not given (an ONNX classifier: its own size)

BUNDLED = bundled(SQUEEZENET)
PROTO = str(BUNDLED / "deploy.prototxt")
MODEL = str(BUNDLED / "squeezenet1_1.caffemodel")
SAMPLES = str(bundled(IMAGES))
VQA_PROTO = opt.VQA_PROTO_FILE.default
VQA_MODEL = opt.VQA_MODEL_FILE.default
ENABLE = {
    "vqa": "start the server with -vqa_model_path <lstm.t7> -vqa_vocab_file <data_prepro.json> "
           "(and the VQA image net: -vqa_proto_file, -vqa_model_file)",
    "captioning": "start the server with -caption_model_path <a neuraltalk2 checkpoint .t7>",
    "segmentation": "start the server with -segment_model_file <an ONNX segmentation model>, or -segment_arch "
                    "<deeplabv3_resnet50, fcn_resnet50, ...> -segment_model_file <its state_dict>",
    "detection": "start the server with -detect_arch <fasterrcnn_resnet50_fpn, retinanet_resnet50_fpn, ...> "
                 "-detect_model_file <its state_dict>",
}


def _port(name: str, value: object) -> int:
    """A TCP port (0 = any free one)."""
    port = as_int(name, value)
    if not 0 <= port <= 65535:
        raise GradCamError(f"-{name} {port} is not a TCP port (0 to 65535)")
    return port


def _host(name: str, value: object) -> str:
    """An address to bind, surrounding spaces dropped."""
    host = as_str(value).strip()
    if not host:
        raise GradCamError(f"-{name} needs an address, e.g. 127.0.0.1")
    return host


def _names(name: str, value: object) -> list[str]:
    """Comma-separated names, spaces and empty ones dropped."""
    return [h.strip() for h in as_str(value).split(",") if h.strip()]


def _seconds(name: str, value: object) -> float:
    """A time limit: a positive number of seconds (at most a day)."""
    seconds = as_float(name, value)
    if not 0 < seconds <= 86400:
        raise GradCamError(f"-{name} must be a number of seconds above 0 (at most 86400), got {value!r}")
    return seconds


OPTIONS = opt.OptionTable(
    opt.Option("port", 8000, 'the TCP port (0 = any free port; the line "Serving on ..." names it).', _port),
    opt.Option("host", "127.0.0.1", "the address to bind; anything but 127.0.0.1 / localhost / ::1 is said on start.",
               _host),
    opt.Option("allowed_hosts", "", "further Host names to answer, comma-separated (localhost, 127.0.0.1, [::1] and "
               "-host are always answered; other names are refused against DNS rebinding).", _names),
    opt.PROTO_FILE.but(help="classification: Caffe deploy prototxt (as classification.py)."),
    opt.MODEL_FILE.but(help="classification: Caffe weights, an ONNX file, or a torchvision state_dict with -arch."),
    opt.ARCH.but(help="classification: a torchvision architecture (-model_file is its state_dict)."),
    opt.LAYER_NAME.but(default="", help="classification: the default layer ('' = relu5_3 if the net has it, else the "
                       "last layer with a spatial output); the page lists the others."),
    opt.MODEL_INPUT_SZ.but(help="side of the square network input (every task; default: an ONNX model's own size, "
                           "else 224)."),
    opt.SYNSET_FILE.but(help="classification: class names (synset_words.txt format)."),
    opt.PREPROCESS.but(help="classification: caffe or torchvision (default: the model format's)."),
    opt.MEAN_VALUE.but(help="classification: per-channel means in the net's channel order."),
    opt.MEAN_FILE.but(help="classification: a Caffe mean image (mean.binaryproto)."),
    opt.INPUT_SCALE.but(help="classification: Caffe's transform_param scale."),
    opt.CHANNEL_ORDER.but(help="classification: bgr or rgb."),
    opt.Option("vqa_model_path", "", "VQA: the LSTM checkpoint (lstm.t7); turns VQA on."),
    opt.Option("vqa_vocab_file", "", "VQA: its vocabulary (data_prepro.json)."),
    opt.VQA_PROTO_FILE.but(name="vqa_proto_file", help="VQA: the image net's prototxt (VGG-19)."),
    opt.VQA_MODEL_FILE.but(name="vqa_model_file", help="VQA: the image net's caffemodel."),
    opt.VQA_LAYER_NAME.but(name="vqa_layer_name", help="VQA: the default layer."),
    opt.QUESTION.but(name="vqa_question", help="VQA: the question the page starts with."),
    *(o.prefixed("vqa_", "VQA: ") for o in opt.VQA_SIZES),
    opt.Option("caption_model_path", "", "captioning: a neuraltalk2 checkpoint (.t7); turns captioning on."),
    opt.Option("caption_layer", "30", "captioning: the default layer (a module number or name, as captioning.py -layer)."),
    opt.Option("segment_model_file", "", "segmentation: an ONNX segmentation model, or with -segment_arch its "
               "state_dict; turns segmentation on."),
    opt.Option("segment_arch", "", "segmentation: a torchvision segmentation architecture (deeplabv3_resnet50, ...)."),
    opt.Option("segment_layer_name", "", "segmentation: the default layer ('' = the backbone's output, as "
               "segmentation.py)."),
    opt.Option("segment_synset_file", "", "segmentation: class names (default: the ONNX file's, or torchvision's VOC "
               "names)."),
    opt.DETECT_ARCH.but(default="", help="detection: a torchvision detection architecture (fasterrcnn_resnet50_fpn, "
                        "retinanet_resnet50_fpn, ssdlite320_mobilenet_v3_large, ...); turns detection on.").prefixed(
        "detect_", ""),
    opt.DETECT_MODEL_FILE.but(help="detection: the detector's torchvision state_dict (.pth, loaded with "
                              "weights_only=True); '' = random weights (their detections mean nothing).").prefixed(
        "detect_", ""),
    opt.DETECT_LAYER_NAME.prefixed("detect_", "detection: "),
    opt.SCORE_THRESHOLD.but(help="explain the detections scoring at least this (0 to 1).").prefixed(
        "detect_", "detection: "),
    opt.MAX_BOXES.but(help="explain at most this many detections per image, best first.").prefixed(
        "detect_", "detection: "),
    opt.Option("samples", SAMPLES, "a folder whose JPEG and PNG files are offered as samples ('' = none)."),
    opt.Option("max_upload_mb", 20, "the largest upload accepted, in MB (larger: 413).", as_positive_int),
    opt.Option("max_pixels", 40_000_000, "the largest image accepted, width x height (larger: 400).", as_positive_int),
    opt.Option("max_queue", 8, "requests in the server at once (waiting or running); past it 503 with Retry-After. "
               "A request joins it once its whole form has arrived.", as_positive_int),
    opt.Option("max_uploads", 16, "forms being received at once; past it 503 with Retry-After.", as_positive_int),
    opt.Option("max_connections", 64, "open connections; past it a request is answered 503 and its connection closed.",
               as_positive_int),
    opt.Option("body_timeout", 60, "seconds a form may take to arrive, in all (past it 408).", _seconds),
    opt.Option("header_timeout", 10, "seconds a request's line and headers may take to arrive, and the longest pause "
               "within a form (past it the connection is closed, within a form 408).", _seconds),
    opt.GPUID,
    opt.SEED,
)


@OPTIONS.command
def main(v: SimpleNamespace) -> None:
    """The Grad-CAM web demo: classification, VQA, captioning, segmentation and detection in the browser, on your own models.

    python -m gradcam_core.web [-port 8000] [-host 127.0.0.1] [model options]

    Serves http://HOST:PORT/ (the page) and POST /api/explain (the JSON API the page uses; see docs/web.md).
    The models are named by the command-line scripts' own options and loaded once. Classification:
    default the bundled SqueezeNet 1.1 (gradcam_core/data/squeezenet1_1); VQA is on with -vqa_model_path and
    -vqa_vocab_file, captioning with -caption_model_path, segmentation with -segment_model_file, detection with -detect_arch;
    a task left off is shown disabled.
    """
    from ..extras import require

    require("web")
    from .demo import ENGINE, TASKS, Demo, find_samples

    limits = {"max_queue": v.max_queue, "max_uploads": v.max_uploads, "max_connections": v.max_connections,
              "body_seconds": v.body_timeout, "header_seconds": v.header_timeout}
    samples_found = find_samples(Path(v.samples)) if v.samples else {}
    device = device_for(v.gpuid)
    seed_torch(v.seed)

    def load_tasks() -> dict:
        """The models, loaded on the engine thread (see demo.EngineThread)."""
        tasks: dict = {}
        tasks["classification"] = _classification(
            v.model_file, v.proto_file, v.arch, v.synset_file, v.layer_name,
            as_input_options(v.preprocess, v.mean_value, v.mean_file, v.input_scale, v.channel_order), v.input_sz,
            device)
        if v.vqa_model_path:
            from ..extras import require
            from ..tasks.vqa.model import VQASizes

            require("vqa")
            from .demo import load_vqa

            if not v.vqa_vocab_file:
                raise GradCamError("-vqa_model_path needs -vqa_vocab_file (data_prepro.json) too")
            tasks["vqa"] = load_vqa(
                input_path("vqa_model_path", v.vqa_model_path, ""),
                input_path("vqa_vocab_file", v.vqa_vocab_file, ""),
                input_path("vqa_proto_file", v.vqa_proto_file, VQA_PROTO),
                input_path("vqa_model_file", v.vqa_model_file, VQA_MODEL),
                sizes=VQASizes(**opt.subset(v, opt.VQA_SIZES, "vqa_")),
                layer=v.vqa_layer_name, input_sz=v.input_sz or DEFAULT_INPUT_SIZE, device=device,
                question=v.vqa_question,
            )
        elif v.vqa_vocab_file:
            raise GradCamError("-vqa_vocab_file needs -vqa_model_path (the LSTM checkpoint) too")
        if v.caption_model_path:
            from .demo import load_captioning

            tasks["captioning"] = load_captioning(input_path("caption_model_path", v.caption_model_path, ""),
                                                  layer=v.caption_layer, input_sz=v.input_sz or DEFAULT_INPUT_SIZE,
                                                  device=device)
        if v.segment_model_file:
            from .demo import load_segmentation

            tasks["segmentation"] = load_segmentation(
                input_path("segment_model_file", v.segment_model_file, ""), arch=v.segment_arch,
                synset_file=input_path("segment_synset_file", v.segment_synset_file, "")
                if v.segment_synset_file else None,
                layer=v.segment_layer_name, input_sz=v.input_sz, device=device)
        elif v.segment_arch:
            raise GradCamError(f"-segment_arch {v.segment_arch} needs its weights: give its torchvision state_dict "
                               "with -segment_model_file; nothing is downloaded")
        if v.detect_arch:
            from ..tasks.detect import check_arch
            from .demo import load_detection

            try:  # a classifier's name is refused before any file is read
                arch = check_arch(v.detect_arch)
            except GradCamError as err:
                raise GradCamError(str(err).replace("-arch ", "-detect_arch ", 1)) from None
            tasks["detection"] = load_detection(
                arch,
                input_path("detect_model_file", v.detect_model_file, "") if v.detect_model_file else None,
                layer=v.detect_layer_name, score_threshold=v.detect_score_threshold, max_boxes=v.detect_max_boxes,
                device=device)
        elif v.detect_model_file:
            raise GradCamError("-detect_model_file needs -detect_arch (the torchvision architecture of the state_dict)")
        return tasks

    tasks = ENGINE.call(load_tasks)
    demo = Demo(tasks, {k: why for k, why in ENABLE.items() if k not in tasks}, samples_found, v.max_upload_mb << 20,
                v.max_pixels)
    for name in TASKS:
        task = tasks.get(name)
        _say(f"{name}: {task.model_name}, layer {task.default_layer}" if task else f"{name}: off ({ENABLE[name]})")
    serve(demo, v.host, v.port, v.allowed_hosts, **limits)


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


entry = console_script(main, "gradcam-web")

if __name__ == "__main__":
    console_script(main, "python -m gradcam_core.web")()
