"""The web demo's models, loaded once, and one explanation per request.

A request's image goes through what the command line does with a file: :func:`load_rgb` then the
model's preprocessing (so the net input is ``load_input``'s), one :func:`~gradcam_core.engine.explain`
through the task's own function (``explain_classes``, ``explain_answers``, ``explain_captions``), and
the CLI's renderer (:func:`~gradcam_core.run.outputs.render_triplet`, ``render_overlay``): the PNGs are
the files the CLI writes for the same image and options, byte for byte.

No Starlette here: :mod:`.app` serves what this module computes. Fields arrive as the strings of a
form; a bad one raises :class:`~gradcam_core.errors.GradCamError` with one line, which the server
answers with a 400.
"""
from __future__ import annotations

import abc
import asyncio
import base64
import concurrent.futures
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote

import torch
from torch import nn

from ..engine import Explanation, resolve_layer
from ..engine.layers import parameter_dtype, spatial_layers
from ..errors import GradCamError
from ..formats.synset import is_label_number
from ..image.decode import image_size
from ..image.png import png_bytes
from ..image.preprocessing import Preprocessing, load_rgb, net_input
from ..run import outputs
from ..run.batches import nonfinite_message, unguided_message
from ..tasks.classify import Classifier, default_classifier_layer, explain_classes

ENGINE_LOCK = threading.Lock()
"""One explanation at a time in the whole process: the engine switches the explained model's
activations for guided backprop during a call, and its Torch7 numerics turn oneDNN off process-wide
(``torch.backends.mkldnn.enabled``), which would change another model's numbers mid-call."""


class EngineThread:
    """The one thread on which the server makes every torch call: loading the models and each
    request's :meth:`DemoTask.explain`.

    torch's OpenMP runtime (libgomp) gives each thread that runs a parallel region its own pool of
    worker threads; once a process has more of those than CPUs, the workers sleep between regions
    instead of spinning, and a net of many small operations (SqueezeNet) pays a wake-up for each. On
    one thread the server's engine runs as the command line's does."""

    def __init__(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gradcam-engine")

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the engine thread, waiting for it (errors are raised here)."""
        return self._pool.submit(fn, *args).result()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the engine thread, awaited without blocking the event loop."""
        return await asyncio.wrap_future(self._pool.submit(fn, *args))


ENGINE = EngineThread()


class Abandoned(Exception):
    """Nobody waits for this explanation any more (its client disconnected, or the server stops)."""

T = TypeVar("T")


@dataclass
class Result:
    """One explanation as the API returns it (see docs/web.md, "The API").

    ``images`` holds PNG bytes: ``input`` (the image as the net saw it, 3 x S x S), ``overlay``, ``gcam``
    (the heatmap colours), ``gb`` and ``gb_gcam``; ``files`` the CLI's name of each."""

    task: str
    layer: str
    target: dict[str, Any]
    predicted: dict[str, Any]
    predictions: list[dict[str, Any]] | None
    images: dict[str, bytes]
    files: dict[str, str]
    explain_seconds: float
    unguided: tuple[str, ...] = ()
    """The activations guided backprop could not change (``Explanation.unguided``); in the JSON with
    the warning the CLI prints, only when there are any."""

    def to_json(self) -> dict[str, Any]:
        """The JSON body: images as ``data:image/png;base64,...`` URLs."""
        body: dict[str, Any] = {
            "task": self.task, "layer": self.layer, "target": self.target, "predicted": self.predicted,
            "images": {k: "data:image/png;base64," + base64.b64encode(v).decode("ascii") for k, v in self.images.items()},
            "files": self.files, "seconds": {"explain": round(self.explain_seconds, 4)},
        }
        if self.predictions is not None:
            body["predictions"] = self.predictions
        if self.unguided:
            body["unguided"] = list(self.unguided)
            body["warning"] = unguided_message(self.unguided)
        return body


@dataclass
class Outcome:
    """What a task made of one image: the explanation (one target), the name of its files and the
    JSON parts that say what was explained and what the model predicted."""

    expl: Explanation
    name: str
    target: dict[str, Any]
    predicted: dict[str, Any]
    predictions: list[dict[str, Any]] | None = None


class DemoTask(abc.ABC):
    """A loaded model of one task, as the demo offers it.

    Subclasses set ``net`` (whose layers are listed and explained), ``default_layer`` and
    ``preprocessing``, and implement :meth:`check` (form fields -> what :meth:`run` needs, before any
    image is decoded) and :meth:`run` (the explanation of one preprocessed image)."""

    name: ClassVar[str]
    prefix: ClassVar[str]
    """The CLI's file prefix: ``classify``, ``vqa`` or ``caption``."""
    dtype: ClassVar[torch.dtype] = torch.float32

    net: nn.Module
    model_name: str
    default_layer: str
    input_sz: int
    device: torch.device
    preprocessing: Preprocessing | None = None

    def finish_loading(self) -> None:
        """List the layers whose output is a spatial map (one forward of zeros) and name the default
        layer as the list does."""
        probe = torch.zeros(1, 3, self.input_sz, self.input_sz, device=self.device, dtype=self._net_dtype())
        self.layers = [name for name, _ in spatial_layers(self.net, probe)]
        self.default_layer = self._listed(self.default_layer)

    def _net_dtype(self) -> torch.dtype:
        return parameter_dtype(self.net)

    def _listed(self, layer: str) -> str:
        """``layer`` as the layer list names it (a module number -> its name); unlisted names stay."""
        if layer in self.layers:
            return layer
        module = resolve_layer(self.net, layer)[0]
        for name in self.layers:
            if resolve_layer(self.net, name)[0] is module:
                return name
        self.layers.append(layer)
        return layer

    def layer(self, value: str) -> str:
        """The form's ``layer`` ('' = the default), checked against the net, as the layer list names
        it: a layer given by another of its names (a loadcaffe module number, an alias) is the listed
        name of the same layer; one not in the list (no spatial output) is named as the net names it."""
        value = value.strip()
        if not value:
            return self.default_layer
        if value in self.layers:
            return value
        wanted = resolve_layer(self.net, value)  # an unknown layer: one line listing the valid ones
        listed = next((name for name in self.layers if resolve_layer(self.net, name) == wanted), None)
        index_of, names = getattr(self.net, "index_of", None), getattr(self.net, "names", None)
        if listed is None and index_of is not None and names:
            listed = names[index_of(value) - 1]  # a GraphNet's own name of the module
        return listed or value

    def config(self) -> dict[str, Any]:
        """This task's part of ``GET /api/config``."""
        return {"enabled": True, "model": self.model_name, "layers": self.layers,
                "default_layer": self.default_layer, "input_sz": self.input_sz}

    @abc.abstractmethod
    def check(self, fields: Mapping[str, str]) -> Any:
        """The task's form fields checked (GradCamError with one line), before any work."""

    @abc.abstractmethod
    def run(self, x: torch.Tensor, checked: Any, layer: str) -> Outcome:
        """Explain one preprocessed image ``x`` (1, 3, S, S) for the checked fields."""

    def explain(self, image: Path, fields: Mapping[str, str], max_pixels: int,
                gone: threading.Event | None = None) -> Result:
        """The whole explanation of the image file ``image`` for the form ``fields``. Once ``gone`` is
        set (the client left), the next stage is not started: :class:`Abandoned` is raised instead."""
        def keep_going() -> None:
            if gone is not None and gone.is_set():
                raise Abandoned()

        keep_going()
        checked, layer = self.check(fields), self.layer(fields.get("layer", ""))
        width, height = image_size(image, exif_orientation=True)
        if width * height > max_pixels:
            raise GradCamError(f"the image is {width}x{height}: more than the server's limit of {max_pixels} pixels")
        # turned as its EXIF orientation says, as the browser shows it (the scripts ignore it)
        try:
            rgb = load_rgb(image, self.input_sz, self.input_sz, self.dtype, exif_orientation=True)
        except RuntimeError as err:  # torch's CPU allocator: the server's 503, as below
            if "can't allocate memory" in str(err):
                raise MemoryError(str(err)) from None
            raise
        keep_going()  # the decode and resize of a large image done: the engine's forward and backward next
        x = net_input(rgb, self.preprocessing, self.dtype)[None].to(self.device)
        with ENGINE_LOCK:
            start = time.perf_counter()
            try:
                outcome = self.run(x, checked, layer)
            except RuntimeError as err:  # e.g. an input size the net cannot take
                if "can't allocate memory" in str(err):  # torch's CPU allocator: the server's 503, not a 400
                    raise MemoryError(str(err)) from None
                raise GradCamError(f"the {self.name} model failed on this input: {str(err).splitlines()[0]}") from None
            seconds = time.perf_counter() - start
        if bad := outcome.expl.nonfinite(0):  # black maps and an arbitrary class otherwise
            raise GradCamError(nonfinite_message(bad, f"the {self.name} model ({self.model_name})",
                                                 "check its weights and preprocessing", "this image"))
        return self._result(outcome, layer, rgb, seconds)

    def _result(self, outcome: Outcome, layer: str, rgb: torch.Tensor, seconds: float) -> Result:
        """The four images of the target, rendered as the CLI renders them, and the input."""
        assert outcome.expl.guided is not None  # the demo always explains with guided backprop
        cam, guided = outcome.expl.cam[0, 0], outcome.expl.guided[0, 0]
        triplet = outputs.render_triplet(self.prefix, outcome.name, cam, guided, heatmap=True, dtype=self.dtype)
        overlay = outputs.render_overlay(self.prefix, outcome.name, cam, rgb)
        rendered = dict(zip(("gcam", "gb", "gb_gcam"), triplet), overlay=overlay)
        images = {"input": png_bytes(rgb)} | {k: r.png for k, r in rendered.items()}
        files = {"input": outputs.safe_filename(f"{self.prefix}_input_", outcome.name)}
        files |= {k: r.filename for k, r in rendered.items()}
        return Result(self.name, layer, outcome.target, outcome.predicted, outcome.predictions,
                      images, files, seconds, outcome.expl.unguided)


# ------------------------------------------------------------------------------------ classification


class ClassificationTask(DemoTask):
    """A classifier (Caffe, ONNX or torchvision). Labels are 1-based, as the CLI's ``-label``."""

    name, prefix = "classification", "classify"

    def __init__(self, model: Classifier, model_name: str, layer: str, input_sz: int, device: torch.device) -> None:
        self.model, self.net, self.model_name = model, model.net, model_name
        # messages name the class names as the page knows them, not by the server's file path
        self.names = dataclasses.replace(model.names, source="the model's class names") if model.names else None
        self.preprocessing, self.input_sz, self.device = model.preprocessing, input_sz, device
        probe = torch.zeros(1, 3, input_sz, input_sz, device=device, dtype=self._net_dtype())
        self.default_layer = layer or default_classifier_layer(self.net, probe)
        self.finish_loading()
        with torch.no_grad():
            self.classes = int(self.net(probe).reshape(1, -1).shape[1])
        if model.names is not None:
            model.names.check_count(self.classes)

    def config(self) -> dict[str, Any]:
        names = self.names
        return super().config() | {"classes": [names.name(i) for i in range(len(names))] if names else None}

    def check(self, fields: Mapping[str, str]) -> int | None:
        """The ``label`` field -> a 0-based class, or None (predicted)."""
        text = fields.get("label", "").strip()
        if not text or text == "-1":
            return None
        if is_label_number(text):  # as the CLI's -label: "٣" is a class name
            label = int(text)
        else:
            if self.names is None:
                raise GradCamError(f"label {text!r}: this model has no class names; give a 1-based label")
            return self.names.lookup(text)
        if not 1 <= label <= self.classes:
            raise GradCamError(f"label {label} is not one of this model's labels: 1 to {self.classes} (1-based)")
        return label - 1

    def run(self, x: torch.Tensor, checked: int | None, layer: str) -> Outcome:
        expl, resolved = explain_classes(self.net, x, layer, [checked])
        label = resolved[0][0] + 1
        probs = torch.softmax(expl.scores.reshape(-1).double(), 0)
        top = torch.topk(probs, min(5, probs.numel()))
        predictions = [self._named(int(i) + 1) | {"score": float(p)} for p, i in zip(top.values, top.indices)]
        predicted = self._named(int(probs.argmax()) + 1)
        return Outcome(expl, str(label), self._named(label), predicted, predictions)

    def _named(self, label: int) -> dict[str, Any]:
        names = self.names
        return {"label": label, "name": names.name(label - 1) if names else None}


# ------------------------------------------------------------------------------------------------ VQA


class VQATask(DemoTask):
    """The VQA LSTM + CNN model: a question, and an answer to explain ('' = the predicted one)."""

    name, prefix = "vqa", "vqa"

    def __init__(self, answerer: Any, image_net: Any, model_name: str, layer: str, input_sz: int,
                 device: torch.device, question: str) -> None:
        from ..tasks.vqa.model import DTYPE

        self.dtype = DTYPE  # type: ignore[misc]  # the original ran VQA in float64
        self.answerer, self.image_net, self.net = answerer, image_net, image_net.cnn
        self.model_name, self.default_layer, self.input_sz, self.device = model_name, layer, input_sz, device
        self.question = question
        answerer.encode(question)  # loads the tokenizer now, not in the first request
        self.finish_loading()

    def config(self) -> dict[str, Any]:
        return super().config() | {"question": self.question, "answers": list(self.answerer.vocab.answers)}

    def check(self, fields: Mapping[str, str]) -> tuple[str, int | None]:
        question = fields.get("question", "").strip()
        if not question:
            raise GradCamError("a VQA request needs a question")
        answer = fields.get("answer", "").strip()
        index = self.answerer.vocab.answer_index(answer) if answer else None
        if answer and index is None:
            raise GradCamError(f"answer {answer!r} is not one of the model's answers")
        return question, index

    def run(self, x: torch.Tensor, checked: tuple[str, int | None], layer: str) -> Outcome:
        from ..tasks.vqa.target import explain_answers

        question, index = checked
        _, ids, length = self.answerer.encode(question)
        feature = self.answerer.question_feature(torch.tensor([ids], device=self.device),
                                                 torch.tensor([length], device=self.device))
        expl, scores, indices = explain_answers(self.image_net, self.answerer.answer_net, x, feature, [index], layer)
        answers = self.answerer.vocab.answers
        probs = torch.softmax(scores[0].double(), 0)
        top = torch.topk(probs, min(5, probs.numel()))
        predictions = [{"answer": answers[int(i)], "score": float(p)} for p, i in zip(top.values, top.indices)]
        name = answers[indices[0][0]]
        return Outcome(expl, name, {"answer": name, "question": question},
                       {"answer": answers[int(scores[0].argmax())]}, predictions)


# ----------------------------------------------------------------------------------------- captioning


class CaptioningTask(DemoTask):
    """A neuraltalk2 checkpoint: a caption to explain ('' = the generated one)."""

    name, prefix = "captioning", "caption"

    def __init__(self, captioner: Any, model_name: str, layer: str, input_sz: int, device: torch.device) -> None:
        self.captioner, self.net = captioner, captioner.cnn
        self.model_name, self.default_layer, self.input_sz, self.device = model_name, layer, input_sz, device
        self.finish_loading()

    def check(self, fields: Mapping[str, str]) -> str | None:
        from ..tasks.caption.target import CaptionTarget

        caption = fields.get("caption", "").strip()
        if caption:
            CaptionTarget(self.captioner, caption)  # a caption that does not fit: one line, before any work
        return caption or None

    def run(self, x: torch.Tensor, checked: str | None, layer: str) -> Outcome:
        from ..tasks.caption.target import explain_captions

        expl, generated = explain_captions(self.captioner, x, layer, [checked])
        caption = checked or generated[0]
        return Outcome(expl, caption, {"caption": caption}, {"caption": generated[0]})


# ----------------------------------------------------------------------------------------- the demo


@dataclass
class Demo:
    """Everything the server serves: the loaded tasks, the options that would enable the others, the
    sample images (name -> file) and the limits."""

    tasks: dict[str, DemoTask]
    disabled: dict[str, str] = field(default_factory=dict)
    samples: dict[str, Path] = field(default_factory=dict)
    max_upload_bytes: int = 20 << 20
    max_pixels: int = 40_000_000

    def config(self) -> dict[str, Any]:
        """The body of ``GET /api/config``."""
        tasks: dict[str, Any] = {}
        for name in TASKS:
            if name in self.tasks:
                tasks[name] = self.tasks[name].config()
            else:
                tasks[name] = {"enabled": False, "enable": self.disabled.get(name, "")}
        return {
            "tasks": tasks,
            "samples": [{"name": n, "url": "/samples/" + quote(n, safe="")} for n in self.samples],
            "limits": {"max_upload_bytes": self.max_upload_bytes, "max_pixels": self.max_pixels},
        }

    def sample(self, name: str) -> Path | None:
        """The file of the sample ``name``, or None: not one of the samples, or no longer a regular
        file of its own (replaced by a symbolic link since the start, or gone)."""
        path = self.samples.get(name)
        if path is None or path.is_symlink() or not path.is_file():
            return None
        return path

    def task(self, name: str) -> DemoTask:
        """The loaded task ``name``, or one line saying why there is none."""
        if name in self.tasks:
            return self.tasks[name]
        if not name:
            raise GradCamError(f"the request names no task: send task = {', '.join(TASKS)}")
        if name in TASKS:
            raise GradCamError(f"the {name} task is not enabled on this server: {self.disabled.get(name, '')}".rstrip(": "))
        raise GradCamError(f"unknown task {name!r}: expected one of {', '.join(TASKS)}")


TASKS = ("classification", "vqa", "captioning")
SAMPLE_SUFFIXES = (".jpg", ".jpeg", ".png")


def find_samples(folder: Path | None) -> dict[str, Path]:
    """The sample images: the JPEG and PNG files directly in ``folder`` (hidden ones and symbolic links
    left out: a link may point anywhere on the machine), by name."""
    if folder is None or not folder.is_dir():
        return {}
    return {p.name: p for p in sorted(folder.iterdir())
            if p.suffix.lower() in SAMPLE_SUFFIXES and not p.name.startswith(".") and not p.is_symlink()
            and p.is_file()}


def model_label(path: Path | None, fmt: str) -> str:
    """How the page names a model: its file name and format."""
    return f"{os.path.basename(path)} ({fmt})" if path is not None else fmt


# ------------------------------------------------------------------------------------------ loading


def load_classification(model_file: Path, *, proto_file: Path | None = None, arch: str = "",
                        synset_file: Path | None = None, inputs: Any = None, layer: str = "",
                        input_sz: int | None = 224,
                        device: torch.device = torch.device("cpu")) -> ClassificationTask:
    """A classifier as ``classification.py`` loads it (``layer`` '' = its default layer; ``input_sz``
    None = the model's own size, as :meth:`Classifier.square_input_size` gives it)."""
    from ..tasks.classify import InputOptions, load_model

    model = load_model(model_file, proto_file=proto_file, arch=arch, device=device, synset_file=synset_file,
                       inputs=inputs or InputOptions())
    return ClassificationTask(model, model_label(model_file, model.fmt), layer, model.square_input_size(input_sz),
                              device)


def load_vqa(model_path: Path, vocab_file: Path, proto_file: Path, model_file: Path, *, sizes: Any = None,
             layer: str = "relu5_4", input_sz: int = 224, device: torch.device = torch.device("cpu"),
             question: str = "What animal?") -> VQATask:
    """The VQA model as ``visual_question_answering.py`` loads it."""
    from ..tasks.vqa.checkpoint import load_answerer
    from ..tasks.vqa.image_net import load_image_net
    from ..tasks.vqa.model import VQASizes
    from ..tasks.vqa.vocabulary import load_vocabulary

    vocab = load_vocabulary(vocab_file)
    answerer = load_answerer(model_path, vocab, sizes or VQASizes(), device)
    image_net = load_image_net(proto_file, model_file, device)
    return VQATask(answerer, image_net, model_label(model_path, "VQA LSTM + " + os.path.basename(model_file)),
                   layer, input_sz, device, question)


def load_captioning(model_path: Path, *, layer: str = "30", input_sz: int = 224,
                    device: torch.device = torch.device("cpu")) -> CaptioningTask:
    """A neuraltalk2 checkpoint as ``captioning.py`` loads it."""
    from ..tasks.caption.checkpoint import load_checkpoint

    return CaptioningTask(load_checkpoint(model_path, device), model_label(model_path, "neuraltalk2"), layer,
                          input_sz, device)
