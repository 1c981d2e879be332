"""The web demo's models, loaded once, and one explanation per request.

A request's image goes through what the command line does with a file: :func:`load_rgb` then the
model's preprocessing (so the net input is ``load_input``'s), one explanation by the task the command
line drives too (:class:`~gradcam_core.run.task.Task`: its targets parsed from the form, the method
and modifiers of the form), and the CLI's renderer (:func:`~gradcam_core.run.task.render_target`): the
PNGs are the files the CLI writes for the same image and options, byte for byte, and named as it names
them.

No Starlette here: :mod:`.app` serves what this module computes. Fields arrive as the strings of a
form; a bad one raises :class:`~gradcam_core.errors.GradCamError` with one line, which the server
answers with a 400.
"""
from __future__ import annotations

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
from typing import Any, TypeVar
from urllib.parse import quote

import torch

from ..engine import Explanation, resolve_layer
from ..engine.layers import parameter_dtype, spatial_layers
from ..errors import GradCamError
from ..image.decode import image_size
from ..image.png import png_bytes
from ..image.preprocessing import load_rgb, net_input
from ..run import outputs
from ..run.batches import nonfinite_message, unguided_message
from ..run.task import DEFAULT_METHOD, ImageResult, Methods, Task, method_list, render_target

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
    (the method's map in the heatmap colours), ``gb`` and ``gb_gcam``, and for segmentation ``mask`` (the
    pixels the class's logits are summed over, white); ``files`` the CLI's name of each."""

    task: str
    layer: str
    target: dict[str, Any]
    predicted: dict[str, Any]
    predictions: list[dict[str, Any]] | None
    images: dict[str, bytes]
    files: dict[str, str]
    explain_seconds: float
    method: str = DEFAULT_METHOD
    modifiers: dict[str, bool] = field(default_factory=dict)
    unguided: tuple[str, ...] = ()
    """The activations guided backprop could not change (``Explanation.unguided``): in the JSON with
    the warning the CLI prints, only when there are any."""

    def to_json(self) -> dict[str, Any]:
        """The JSON body: images as ``data:image/png;base64,...`` URLs."""
        body: dict[str, Any] = {
            "task": self.task, "layer": self.layer, "method": self.method, "modifiers": self.modifiers,
            "target": self.target, "predicted": self.predicted,
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
class Checked:
    """A request's fields checked: the task's targets (one) and the method with its modifiers."""

    targets: Any
    methods: Methods


@dataclass
class Outcome:
    """What a task made of one image: the explanation (one target, one method) and what the target
    turned out to be (:class:`~gradcam_core.run.task.ImageResult`)."""

    expl: Explanation
    image: ImageResult
    methods: Methods
    extra: dict[str, outputs.Rendered] = field(default_factory=dict)
    """The task's images beyond the methods' (segmentation: ``mask``, the class's region)."""


MODIFIERS = ("counterfactual", "aug_smooth", "eigen_smooth")
"""The form's 0/1 fields that modify any method."""


def request_methods(fields: Mapping[str, str]) -> Methods:
    """The form's ``method`` (one registered name; '' = Grad-CAM), its 0/1 modifiers and ``layer_layout``
    ('' = auto)."""
    name = fields.get("method", "").strip() or DEFAULT_METHOD
    flags = {}
    for key in MODIFIERS:
        value = fields.get(key, "").strip()
        if value not in ("", "0", "1"):
            raise GradCamError(f"{key} {value!r}: expected 0 or 1")
        flags[key] = value == "1"
    return Methods((name,), counterfactual=flags["counterfactual"], aug_smooth=flags["aug_smooth"],
                   eigen_smooth=flags["eigen_smooth"], layer_layout=fields.get("layer_layout", "").strip() or "auto")


class DemoTask:
    """A loaded task (:class:`~gradcam_core.run.task.Task`) as the demo offers it: its layers listed,
    form fields checked (:meth:`check`, before any image is decoded), one explanation per request
    (:meth:`run`, :meth:`explain`)."""

    def __init__(self, task: Task[Any], model_name: str, layer: str, input_sz: int, device: torch.device) -> None:
        self.task, self.name, self.prefix, self.dtype = task, task.name, task.prefix, task.dtype
        self.net, self.preprocessing = task.net, task.preprocessing
        self.model_name, self.input_sz, self.device = model_name, input_sz, device
        probe = torch.zeros(1, 3, input_sz, input_sz, device=device, dtype=parameter_dtype(self.net))
        self.layers = [name for name, _ in spatial_layers(self.net, probe)]
        self.default_layer = self._listed(layer or task.default_layer(input_sz))

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
                "default_layer": self.default_layer, "input_sz": self.input_sz} | self.task.config()

    def check(self, fields: Mapping[str, str]) -> Checked:
        """The task's form fields (its target: ``label``, ``answer`` or ``caption``; VQA's ``question``)
        and the method fields checked (GradCamError with one line), before any work."""
        methods = request_methods(fields)
        field_name = self.task.target_field
        targets = self.task.targets([fields.get(field_name, "").strip()], option=field_name, strict=True,
                                    question=fields.get("question", "").strip())
        return Checked(targets, methods)

    def run(self, x: torch.Tensor, checked: Checked, layer: str) -> Outcome:
        """Explain one preprocessed image ``x`` (1, 3, S, S) for the checked fields."""
        batch = self.task.explain(x, layer, checked.targets, checked.methods)
        image = batch.images[0]
        if not image.targets:  # (segmentation: a class this image does not predict)
            raise GradCamError(image.lines[0] if image.lines else f"nothing to explain in this image for {self.name}")
        extra = self.task.extra_images(batch, 0, overlay=True)
        return Outcome(batch.explanations[checked.methods.names[0]], image, checked.methods,
                       {"mask": extra[0]} if extra else {})

    def explain(self, image: Path, fields: Mapping[str, str], max_pixels: int,
                gone: threading.Event | None = None) -> Result:
        """The whole explanation of the image file ``image`` for the form ``fields``. Once ``gone`` is
        set (the client left), the next stage is not started: :class:`Abandoned` is raised instead."""
        checked, layer, rgb, x = self.prepare(image, fields, max_pixels, gone)
        outcome, seconds = self.locked(self.run, x, checked, layer)
        if bad := outcome.expl.nonfinite(0):  # black maps and an arbitrary class otherwise
            raise GradCamError(nonfinite_message(bad, f"the {self.name} model ({self.model_name})",
                                                 "check its weights and preprocessing", "this image"))
        return self._result(outcome, layer, rgb, seconds)

    def load(self, image: Path) -> torch.Tensor:
        """The image file as the net sees it before preprocessing: (3, S, S) RGB in [0, 1]."""
        return load_rgb(image, self.input_sz, self.input_sz, self.dtype, exif_orientation=True)

    def prepare(self, image: Path, fields: Mapping[str, str], max_pixels: int,
                gone: threading.Event | None = None) -> tuple[Checked, str, torch.Tensor, torch.Tensor]:
        """The fields checked, the image's size checked and the image loaded (:meth:`load`): the checked
        fields, the layer, the RGB image (3, H, W) and the net input (1, 3, H, W) on the device."""
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
            rgb = self.load(image)
        except RuntimeError as err:  # torch's CPU allocator: the server's 503, as below
            if "can't allocate memory" in str(err):
                raise MemoryError(str(err)) from None
            raise
        keep_going()  # the decode and resize of a large image done: the engine's forward and backward next
        return checked, layer, rgb, net_input(rgb, self.preprocessing, self.dtype)[None].to(self.device)

    def locked(self, fn: Callable[..., T], *args: Any) -> tuple[T, float]:
        """``fn(*args)`` under :data:`ENGINE_LOCK`, and its seconds; a model's RuntimeError is one line."""
        with ENGINE_LOCK:
            start = time.perf_counter()
            try:
                out = fn(*args)
            except RuntimeError as err:  # e.g. an input size the net cannot take
                if "can't allocate memory" in str(err):  # torch's CPU allocator: the server's 503, not a 400
                    raise MemoryError(str(err)) from None
                raise GradCamError(f"the {self.name} model failed on this input: {str(err).splitlines()[0]}") from None
            return out, time.perf_counter() - start

    def _result(self, outcome: Outcome, layer: str, rgb: torch.Tensor, seconds: float) -> Result:
        """The four images of the target, rendered as the CLI renders them, and the input."""
        target = outcome.image.targets[0]
        rendered = render_target(self.prefix, target.name, outcome.expl, 0, target.position(0), outcome.methods,
                                 dtype=self.dtype, rgb=rgb) | outcome.extra
        images = {"input": png_bytes(rgb)} | {k: r.png for k, r in rendered.items()}
        files = {"input": outputs.safe_filename(f"{self.prefix}_input_", target.name)}
        files |= {k: r.filename for k, r in rendered.items()}
        return Result(self.name, layer, target.shown, outcome.image.predicted, outcome.image.predictions,
                      images, files, seconds, outcome.expl.method, outcome.methods.modifiers, outcome.expl.unguided)


# ------------------------------------------------------------------------------------------ detection


@dataclass
class DetectionResult:
    """A detection explanation as the API returns it (see docs/web.md, "Detection"): per box its
    coordinates, class and score and its images (``gcam``, ``gb``, ``gb_gcam``: the bytes of
    ``detection.py``'s files for that box, ``overlay``), and ``boxes``, the CLI's ``detect_boxes.png``."""

    layer: str
    boxes: list[dict[str, Any]]
    images: dict[str, bytes]
    files: dict[str, str]
    explain_seconds: float
    score_threshold: float
    max_boxes: int
    size: tuple[int, int]
    """The image's (width, height): the boxes' coordinates are its pixels."""
    message: str = ""
    """Why no box is explained (no detection scores the threshold); '' when there are boxes."""
    method: str = DEFAULT_METHOD
    modifiers: dict[str, bool] = field(default_factory=dict)
    unguided: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The JSON body: images as ``data:image/png;base64,...`` URLs."""
        def url(png: bytes) -> str:
            return "data:image/png;base64," + base64.b64encode(png).decode("ascii")

        body: dict[str, Any] = {
            "task": "detection", "layer": self.layer, "method": self.method, "modifiers": self.modifiers,
            "score_threshold": self.score_threshold, "max_boxes": self.max_boxes,
            "width": self.size[0], "height": self.size[1],
            "boxes": [box | {"images": {k: url(v) for k, v in box["images"].items()}} for box in self.boxes],
            "images": {k: url(v) for k, v in self.images.items()}, "files": self.files,
            "seconds": {"explain": round(self.explain_seconds, 4)},
        }
        if self.message:
            body["message"] = self.message
        if self.unguided:
            body["unguided"] = list(self.unguided)
            body["warning"] = unguided_message(self.unguided)
        return body


class DetectionDemoTask(DemoTask):
    """A detector (:class:`~gradcam_core.run.detection.DetectionTask`) as the demo offers it: each
    request explains every detection scoring at least ``score_threshold`` (at most ``max_boxes``, best
    first) with the form's method, the image at its own size (the detector resizes it itself), as
    ``detection.py`` does without ``-box``."""

    PROBE = 224
    """The side of the blank image the layer list is found with (any size: the detector resizes it)."""

    def __init__(self, task: Any, model_name: str, layer: str, device: torch.device, *,
                 score_threshold: float, max_boxes: int) -> None:
        super().__init__(task, model_name, layer, self.PROBE, device)
        self.targets = task.targets([], score_threshold=score_threshold, max_boxes=max_boxes)

    def config(self) -> dict[str, Any]:
        return super().config() | {"input_sz": None, "score_threshold": self.targets.score_threshold,
                                   "max_boxes": self.targets.max_boxes}

    def check(self, fields: Mapping[str, str]) -> Checked:
        """The method fields (no target field: the boxes are the detections)."""
        methods = request_methods(fields)
        if methods.aug_smooth:
            raise GradCamError("aug_smooth does not apply to detection: a flipped image's boxes are elsewhere")
        return Checked(self.targets, methods)

    def load(self, image: Path) -> torch.Tensor:
        """The image at its own size: (3, H, W) RGB in [0, 1], as ``detection.py`` loads it."""
        from ..image.decode import load_image, to_rgb

        return to_rgb(load_image(image, self.dtype, exif_orientation=True))

    def explain(self, image: Path, fields: Mapping[str, str], max_pixels: int,  # type: ignore[override]
                gone: threading.Event | None = None) -> DetectionResult:
        """Every detection above the threshold explained; none: the overview and the line saying so."""
        from ..run.detection import render_boxes
        from ..run.task import render_target

        checked, layer, rgb, x = self.prepare(image, fields, max_pixels, gone)
        batch, seconds = self.locked(self.task.explain, x, layer, checked.targets, checked.methods)
        if bad := batch.nonfinite(0):
            raise GradCamError(nonfinite_message(bad, f"the {self.name} model ({self.model_name})",
                                                 "check its weights", "this image"))
        image_result, methods = batch.images[0], checked.methods
        boxes = []
        for k, target in enumerate(image_result.targets):
            expl = batch.explanations[methods.names[0]]
            rendered = render_target(self.prefix, target.name, expl, 0, target.position(k), methods,
                                     dtype=self.dtype, rgb=rgb)
            shown = image_result.predicted["boxes"][k]
            boxes.append({"index": shown["index"], "box": shown["box"], "label": shown["label"],
                          "name": shown["name"], "score": shown["score"],
                          "images": {kind: r.png for kind, r in rendered.items()},
                          "files": {kind: r.filename for kind, r in rendered.items()}})
        overview = render_boxes(self.prefix, rgb, image_result.predicted["boxes"])
        images = {"input": png_bytes(rgb), "boxes": overview.png}
        files = {"input": outputs.safe_filename(f"{self.prefix}_", "input"), "boxes": overview.filename}
        message = "" if boxes else (image_result.lines[0] if image_result.lines else "no detection to explain")
        size = (int(rgb.shape[-1]), int(rgb.shape[-2]))
        return DetectionResult(layer, boxes, images, files, seconds, checked.targets.score_threshold,
                               checked.targets.max_boxes, size, message, methods.names[0], methods.modifiers,
                               batch.unguided)


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
            "methods": method_list(), "default_method": DEFAULT_METHOD, "modifiers": list(MODIFIERS),
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


TASKS = ("classification", "vqa", "captioning", "segmentation", "detection")
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
                        device: torch.device = torch.device("cpu")) -> DemoTask:
    """A classifier as ``classification.py`` loads it (``layer`` '' = its default layer; ``input_sz``
    None = the model's own size, as :meth:`Classifier.square_input_size` gives it)."""
    from ..run.classification import ClassificationTask

    task = ClassificationTask.load(model_file, proto_file=proto_file, arch=arch, device=device,
                                   synset_file=synset_file, inputs=inputs)
    input_sz = task.input_size(input_sz)
    task.count_outputs(input_sz)  # labels past the model's classes refused with the form's checks
    if task.names is not None:  # messages name the class names as the page knows them, not by the server's path
        task.names = dataclasses.replace(task.names, source="the model's class names")
    return DemoTask(task, model_label(model_file, task.model.fmt), layer, input_sz, device)


def load_vqa(model_path: Path, vocab_file: Path, proto_file: Path, model_file: Path, *, sizes: Any = None,
             layer: str = "relu5_4", input_sz: int = 224, device: torch.device = torch.device("cpu"),
             question: str = "What animal?") -> DemoTask:
    """The VQA model as ``visual_question_answering.py`` loads it."""
    from ..run.vqa import VQATask

    task = VQATask.load(model_path, vocab_file, proto_file, model_file, sizes=sizes, device=device, question=question)
    return DemoTask(task, model_label(model_path, "VQA LSTM + " + os.path.basename(model_file)), layer, input_sz,
                    device)


def load_segmentation(model_file: Path, *, arch: str = "", synset_file: Path | None = None, inputs: Any = None,
                      layer: str = "", input_sz: int | None = None,
                      device: torch.device = torch.device("cpu")) -> DemoTask:
    """A segmentation model as ``segmentation.py`` loads it (``layer`` '' = its default layer; ``input_sz``
    None = the model's own size, 520 for a torchvision architecture). A request's label '' is the class
    with the most predicted pixels; the result's ``mask`` is the pixels its logits are summed over."""
    from ..run.segmentation import SegmentationTask

    task = SegmentationTask.load(model_file, arch=arch, device=device, synset_file=synset_file, inputs=inputs)
    input_sz = task.input_size(input_sz)
    task.count_outputs(input_sz)  # a classifier refused; labels past the classes refused with the form's checks
    if task.names is not None:
        task.names = dataclasses.replace(task.names, source="the model's class names")
    return DemoTask(task, model_label(model_file, task.model.fmt), layer, input_sz, device)


def load_detection(arch: str, model_file: Path | None, *, layer: str = "", score_threshold: float = 0.5,
                   max_boxes: int = 20, device: torch.device = torch.device("cpu")) -> DetectionDemoTask:
    """A torchvision detector as ``detection.py`` loads it (``model_file`` None: random weights, whose
    detections mean nothing; ``layer`` '' = its default layer)."""
    from ..run.detection import DetectionTask

    task = DetectionTask.load(arch, model_file, device=device)
    name = model_label(model_file, task.arch) if model_file else f"{task.arch} (random weights)"
    return DetectionDemoTask(task, name, layer, device, score_threshold=score_threshold, max_boxes=max_boxes)


def load_captioning(model_path: Path, *, layer: str = "30", input_sz: int = 224,
                    device: torch.device = torch.device("cpu")) -> DemoTask:
    """A neuraltalk2 checkpoint as ``captioning.py`` loads it."""
    from ..run.captioning import CaptioningTask

    return DemoTask(CaptioningTask.load(model_path, device=device), model_label(model_path, "neuraltalk2"), layer,
                    input_sz, device)
