"""The evaluation run (``gradcam-evaluate``): every image x every CAM method x every metric
(:mod:`gradcam_core.metrics`), then ``results.csv``, ``summary.md`` and the plots.

Per chunk of ``batch_size`` images: each method's maps from its own :func:`~gradcam_core.engine.explain`
call (no guided backprop; timed: the ``seconds`` metric is the call's time over its images), then per
target the metrics on those maps, their perturbed images through the model ``batch_size`` at a time.
Every metric follows the target class's softmax probability. Maps are at the input size; boxes are
scaled from the original image to it (the net sees the image resized to S x S).

Outputs, written together at the end (:func:`~gradcam_core.run.outputs.write_all`):

* ``results.csv``: ``image,label,class,method,metric,value``, one row per image, target, method and
  metric (ROAD's levels too: ``road_morf_10`` ...);
* ``summary.md``: per method the mean and the 95% bootstrap interval (over the images' targets) of
  each metric, the best mean of each column in bold, how many images had no box;
* ``deletion_insertion.png`` (each method's mean curves) and ``bar_<metric>.png`` (one bar chart per
  metric, the intervals as error bars);
* with ``save_overlay``, ``<image>/methods.png``: the image and every method's map over it.
"""
from __future__ import annotations

import csv
import io
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import GradCamError
from .boxes import GroundTruth, RawBox, image_size, read_ground_truth
from .classification import ClassificationTask, ClassTargets
from .inputs import ImageJob, Inputs
from .outputs import Rendered, write_all


@dataclass(frozen=True)
class Metric:
    """A column of the summary: its name, whether higher is better, and what it is."""

    name: str
    higher_is_better: bool
    what: str


METRICS = (
    Metric("deletion_auc", False, "RISE deletion AUC"),
    Metric("insertion_auc", True, "RISE insertion AUC"),
    Metric("average_drop", False, "Average Drop %"),
    Metric("increase_confidence", True, "Increase in Confidence %"),
    Metric("road_morf", False, "ROAD most relevant first, mean over 10..90%"),
    Metric("road_lerf", True, "ROAD least relevant first, mean over 10..90%"),
    Metric("road_combined", True, "ROAD (LeRF - MoRF) / 2"),
    Metric("localization", True, "localization (IoU >= 0.5), 15% threshold"),
    Metric("pointing", True, "pointing game"),
    Metric("seconds", False, "seconds per image for the maps"),
)
"""The summary's columns, in order."""

BOX_METRICS = ("localization", "pointing")


@dataclass
class EvaluationOptions:
    """What the run does (the command's options, converted)."""

    methods: tuple[str, ...]
    layer: str
    layer_layout: str = "auto"
    steps: int = 224
    batch_size: int = 32
    boxes: Path | None = None
    save_overlay: bool = False
    seed: int = 123
    bootstrap: int = 1000
    progress: bool = True


@dataclass
class Evaluation:
    """What a run found: the CSV rows, the mean curves' sums, the problems met and the files written."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    curves: dict[str, dict[str, list[torch.Tensor]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    without_boxes: int = 0
    shared: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per method, the earlier method whose figures it took (the same map) and for how many targets."""
    localized: set[str] = field(default_factory=set)
    """The images with a box of a target's class (scored with localization)."""
    images: int = 0
    skipped: int = 0
    written: list[Path] = field(default_factory=list)


Warn = Callable[[str], None]


def evaluate(task: ClassificationTask, inputs: Inputs, targets: ClassTargets, opts: EvaluationOptions,
             out_dir: Path, *, warn: Warn, input_sz: int | None = None) -> Evaluation:
    """The whole evaluation of ``inputs`` (see the module doc); ``warn`` gets one line per problem
    (a bad box file, a box outside its image, an image without a box, an image that cannot be read).
    ``input_sz``: the side of the square input (None: the model's own, :meth:`Task.input_size`)."""
    from tqdm import tqdm

    from ..engine import explain
    from ..image.preprocessing import load_input, load_rgb
    from ..tasks.classify import class_targets, resolve_classes

    input_sz = task.input_size(input_sz)
    result = Evaluation()
    truth = GroundTruth()
    jobs = list(inputs.jobs)
    if opts.boxes is not None:
        truth = read_ground_truth(opts.boxes, [(j.path, _relative(j)) for j in jobs],
                                  lambda name: _box_label(task, name))
        for line in truth.problems:
            warn(line)
        result.problems += truth.problems
    generator = torch.Generator().manual_seed(opts.seed)
    overlays: list[tuple[ImageJob, Rendered]] = []
    show = opts.progress and sys.stderr.isatty()
    with tqdm(total=len(jobs) * len(opts.methods), unit="map", file=sys.stderr, disable=not show) as bar:
        for start in range(0, len(jobs), opts.batch_size):
            chunk = []
            for job in jobs[start:start + opts.batch_size]:
                try:
                    x = load_input(job.path, input_sz, input_sz, task.preprocessing, task.dtype)
                    rgb = load_rgb(job.path, input_sz, input_sz, task.dtype) if opts.save_overlay else None
                    chunk.append((job, x, rgb))
                except GradCamError as err:
                    if not inputs.many:
                        raise
                    result.skipped += 1
                    bar.update(len(opts.methods))
                    with tqdm.external_write_mode(file=sys.stderr):
                        warn(f"skipping {job.shown}: {err}")
            if not chunk:
                continue
            images = torch.stack([x for _, x, _ in chunk])
            names = [f"-label {lab} (labels are 1-based)" for lab in targets.labels]
            maps: dict[str, torch.Tensor] = {}
            done: dict[tuple[int, int], list[Any]] = {}  # the maps scored in this chunk (_score_method)
            if start == 0:  # one untimed call first: the first forward's and backward's one-off costs are no method's
                explain(task.net, images[:1], opts.layer, class_targets(targets.classes), method=opts.methods[0],
                        guided=False, batch_size=opts.batch_size, layer_layout=opts.layer_layout)
            for method in opts.methods:
                began = time.perf_counter()
                expl = explain(task.net, images, opts.layer, class_targets(targets.classes, names), method=method,
                               guided=False, batch_size=opts.batch_size, layer_layout=opts.layer_layout)
                seconds = (time.perf_counter() - began) / len(chunk)
                classes = resolve_classes(expl.scores, targets.classes)
                maps[method] = expl.cam.detach().float().cpu()
                _score_method(task, images, chunk, classes, method, maps[method], seconds, truth, input_sz, opts,
                              generator, result, done)
                bar.update(len(chunk))
            result.images += len(chunk)
            if opts.save_overlay:
                overlays += [(job, _methods_figure(rgb, {m: c[n, 0] for m, c in maps.items()}, _relative(job)))
                             for n, (job, _, rgb) in enumerate(chunk) if rgb is not None]
    if result.images == 0:
        raise GradCamError("no image could be read (see the 'skipping' lines above)")
    result.without_boxes = result.images - len(result.localized)
    files = [Rendered("results.csv", _csv(result.rows)),
             Rendered("summary.md", summary_markdown(result, opts, task, len(targets.labels)).encode()),
             *plots(result, opts)]
    result.written = write_all(out_dir, files)
    for job, rendered in overlays:
        folder = out_dir.joinpath(*Path(_relative(job)).parts)
        result.written += write_all(folder, [rendered], out_dir)
    return result


def _relative(job: ImageJob) -> str:
    """The image's name in results: its path relative to the folder searched (its name alone for one
    image)."""
    if job.out_root is not None:
        try:
            return job.out_dir.relative_to(job.out_root).as_posix()
        except ValueError:
            pass
    return job.path.name


def _box_label(task: ClassificationTask, name: str) -> int:
    """A box's class as written (what ``-label`` takes) -> 0-based."""
    parsed = task.targets([name], option="class")
    c = parsed.classes[0]
    if c is None:
        raise GradCamError(f"class {name!r}: give a label or a class name")
    return c


SAME_MAP = 1e-5
"""Two methods' maps of an image and target are the same when they differ by at most this after each is
divided by its maximum (float rounding: Grad-CAM, XGrad-CAM and HiResCAM at a layer right before global
average pooling): their figures are computed once."""


def _same_map(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a - b).abs().max() <= SAME_MAP)


def _score_method(task: ClassificationTask, images: torch.Tensor, chunk: Sequence[tuple[ImageJob, Any, Any]],
                  classes: list[list[int]], method: str, cams: torch.Tensor, seconds: float, truth: GroundTruth,
                  input_sz: int, opts: EvaluationOptions, generator: torch.Generator, result: Evaluation,
                  done: dict[tuple[int, int], list[tuple[str, torch.Tensor, dict[str, float], dict[str, torch.Tensor]]]],
                  ) -> None:
    """Every metric of one method's maps ``cams`` (N, K, S, S) for the images of a chunk. ``done``
    holds, per (image, target), the maps already scored in this chunk and their figures: a map the same
    as one of them (:data:`SAME_MAP`) takes its figures instead of being scored again."""
    from .. import metrics

    net, bs = task.net, opts.batch_size
    curves = result.curves.setdefault(method, {"deletion": [], "insertion": []})
    for k in range(cams.shape[1]):
        unit = metrics.unit_maps(cams[:, k])
        cls = [classes[n][k] for n in range(len(chunk))]
        found: dict[int, tuple[str, dict[str, float], dict[str, torch.Tensor]]] = {}
        for n in range(len(chunk)):
            for other, other_map, other_values, other_curves in done.get((n, k), []):
                if _same_map(unit[n], other_map):
                    found[n] = (other, other_values, other_curves)
                    break
        todo = [n for n in range(len(chunk)) if n not in found]
        computed: dict[int, tuple[dict[str, float], dict[str, torch.Tensor]]] = {}
        if todo:
            sub, maps, sub_cls = images[todo], unit[todo], [cls[n] for n in todo]
            dele = metrics.deletion(net, sub, maps, sub_cls, steps=opts.steps, batch_size=bs)
            ins = metrics.insertion(net, sub, maps, sub_cls, steps=opts.steps, batch_size=bs)
            conf = metrics.confidence_change(net, sub, maps, sub_cls, batch_size=bs)
            morf = metrics.road(net, sub, maps, sub_cls, most_relevant_first=True, generator=generator, batch_size=bs)
            lerf = metrics.road(net, sub, maps, sub_cls, most_relevant_first=False, generator=generator, batch_size=bs)
            for i, n in enumerate(todo):
                figures: dict[str, float] = {
                    "deletion_auc": float(dele.auc[i]), "insertion_auc": float(ins.auc[i]),
                    "average_drop": float(conf.average_drop[i]), "increase_confidence": float(conf.increase[i]),
                    "road_morf": float(morf[i].mean()), "road_lerf": float(lerf[i].mean()),
                    "road_combined": float((lerf[i].mean() - morf[i].mean()) / 2),
                }
                for j, p in enumerate(metrics.PERCENTILES):
                    figures[f"road_morf_{p}"] = float(morf[i, j])
                    figures[f"road_lerf_{p}"] = float(lerf[i, j])
                job = chunk[n][0]
                raw = [b for b in truth.boxes.get(str(job.path), []) if b.label == cls[n]]
                if raw:  # a box of the target's class: else the target is scored without localization
                    result.localized.add(str(job.path))
                    boxes = _scaled(raw, image_size(job.path), input_sz)
                    figures["localization"], figures["localization_iou"] = metrics.localization(unit[n], boxes, cls[n])
                    figures["pointing"] = metrics.pointing(unit[n], boxes, cls[n])
                computed[n] = (figures, {"deletion": dele.scores[i], "insertion": ins.scores[i]})
        for n, (job, _, _) in enumerate(chunk):
            if n in found:
                other, values, per_image = found[n]
                result.shared.setdefault(method, {}).setdefault(other, 0)
                result.shared[method][other] += 1
            else:
                values, per_image = computed[n]
                done.setdefault((n, k), []).append((method, unit[n], values, per_image))
            curves["deletion"].append(per_image["deletion"][None])
            curves["insertion"].append(per_image["insertion"][None])
            label = cls[n] + 1
            name = task.names.name(cls[n]) if task.names is not None else ""
            result.rows += [{"image": _relative(job), "label": label, "class": name, "method": method,
                             "metric": metric, "value": value}
                            for metric, value in {**values, "seconds": seconds}.items()]


def _scaled(raw: Sequence[RawBox], size: tuple[int, int], input_sz: int) -> list[Any]:
    """VOC boxes (1-based inclusive, original pixels) -> map boxes (pixel edges at the input size)."""
    from ..metrics import Box

    w, h = size
    sx, sy = input_sz / w, input_sz / h
    return [Box((b.x1 - 1) * sx, (b.y1 - 1) * sy, b.x2 * sx, b.y2 * sy, b.label) for b in raw]


# ------------------------------------------------------------------------------------------- outputs


def _csv(rows: Sequence[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["image", "label", "class", "method", "metric", "value"],
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "value": repr(row["value"])})
    return out.getvalue().encode()


def values_of(rows: Sequence[dict[str, Any]], method: str, metric: str) -> list[float]:
    """The values of one method and metric over the rows, in order."""
    return [r["value"] for r in rows if r["method"] == method and r["metric"] == metric]


def bootstrap_interval(values: Sequence[float], resamples: int, seed: int) -> tuple[float, float, float]:
    """(mean, low, high): the mean and the 95% percentile bootstrap interval of the mean (``resamples``
    resamples with replacement, numpy's generator seeded with ``seed``)."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    mean = float(v.mean())
    if v.size < 2 or resamples < 1:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(resamples, v.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return mean, float(low), float(high)


Stats = dict[str, dict[str, tuple[float, float, float]]]
"""Per method, per metric: (mean, low, high)."""


def summary_table(result: Evaluation, opts: EvaluationOptions) -> tuple[list[Metric], Stats]:
    """The summary's columns (metrics with values) and per method per metric (mean, low, high)."""
    stats: Stats = {}
    columns = [m for m in METRICS if any(r["metric"] == m.name for r in result.rows)]
    for method in opts.methods:
        stats[method] = {}
        for m in columns:
            values = values_of(result.rows, method, m.name)
            if values:
                stats[method][m.name] = bootstrap_interval(values, opts.bootstrap, opts.seed)
    return columns, stats


def summary_markdown(result: Evaluation, opts: EvaluationOptions, task: ClassificationTask, n_targets: int) -> str:
    """``summary.md``: the table and what it was computed on."""
    columns, stats = summary_table(result, opts)
    lines = [f"# Evaluation of {len(opts.methods)} CAM methods", "",
             f"Model {task.model_name}, layer {opts.layer}; {result.images} images x {n_targets} target(s); "
             f"deletion and insertion at {opts.steps} steps. Each cell: the mean over the images' targets and its "
             "95% bootstrap interval; the best mean of each column in bold (arrows: which way is better).", ""]
    lines.append("| method | " + " | ".join(f"{m.name} {'↑' if m.higher_is_better else '↓'}" for m in columns) + " |")
    lines.append("|---|" + "---|" * len(columns))
    best = {}
    for m in columns:
        means = [stats[meth][m.name][0] for meth in opts.methods if m.name in stats[meth]]
        if means:
            best[m.name] = max(means) if m.higher_is_better else min(means)
    for method in opts.methods:
        cells = []
        for m in columns:
            if m.name not in stats[method]:
                cells.append("")
                continue
            mean, low, high = stats[method][m.name]
            text = f"{_fmt(mean)} [{_fmt(low)}, {_fmt(high)}]"
            cells.append(f"**{text}**" if m.name in best and _fmt(mean) == _fmt(best[m.name]) else text)  # ties as shown
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines.append("")
    if opts.boxes is None:
        lines.append("No ground-truth boxes (-boxes): no localization or pointing game.")
    else:
        with_boxes = result.images - result.without_boxes
        lines.append(f"Localization and pointing over the {with_boxes} image(s) with a box of the explained class; "
                     f"{result.without_boxes} image(s) scored without localization (no usable box of the class).")
    if result.skipped:
        lines.append(f"{result.skipped} image(s) could not be read and were skipped.")
    if result.shared:
        same = "; ".join(f"{method} as {other} ({count})" for method, others in result.shared.items()
                         for other, count in others.items())
        lines += ["", f"The same maps (to {SAME_MAP:g} after division by the maximum), so the same figures, for that many "
                  f"image targets: {same}."]
    lines += ["", "Metrics:", ""] + [f"- `{m.name}`: {m.what} ({'higher' if m.higher_is_better else 'lower'} is better)"
                                     for m in columns]
    return "\n".join(lines) + "\n"


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def plots(result: Evaluation, opts: EvaluationOptions) -> list[Rendered]:
    """The PNGs: each method's mean deletion and insertion curves, and one bar chart per metric."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    out = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=80)
    colours = [plt.get_cmap("tab20")(i) for i in range(20)]  # more methods than the default cycle's 10 colours
    for ax, kind in zip(axes, ("deletion", "insertion")):
        for i, method in enumerate(opts.methods):
            curves = result.curves.get(method, {}).get(kind)
            if curves:
                mean = torch.cat(curves).mean(dim=0)
                ax.plot(torch.linspace(0, 1, mean.numel()).numpy(), mean.numpy(), label=method, linewidth=1,
                        color=colours[i % len(colours)], linestyle="-" if i < len(colours) else "--")
        ax.set_title(f"{kind} (mean over images)")
        ax.set_xlabel("fraction of pixels " + ("removed" if kind == "deletion" else "inserted"))
        ax.set_ylabel("class probability")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    out.append(Rendered("deletion_insertion.png", _png(fig)))
    plt.close(fig)
    columns, stats = summary_table(result, opts)
    for m in columns:
        methods = [meth for meth in opts.methods if m.name in stats[meth]]
        means = [stats[meth][m.name][0] for meth in methods]
        errors = [[mean - stats[meth][m.name][1] for meth, mean in zip(methods, means)],
                  [stats[meth][m.name][2] - mean for meth, mean in zip(methods, means)]]
        fig, ax = plt.subplots(figsize=(7, 3.5), dpi=80)
        ax.bar(range(len(methods)), means, yerr=errors, capsize=3, color="#4c72b0")
        ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{m.what} ({'higher' if m.higher_is_better else 'lower'} is better)", fontsize=9)
        fig.tight_layout()
        out.append(Rendered(f"bar_{m.name}.png", _png(fig)))
        plt.close(fig)
    return out


def _methods_figure(rgb: torch.Tensor, cams: dict[str, torch.Tensor], title: str) -> Rendered:
    """``methods.png``: the image, then each method's map (its first target) blended over it."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from ..image.render import overlay

    panels = [("image", rgb.clamp(0, 1))] + [(m, overlay(rgb.float(), c.float())) for m, c in cams.items()]
    cols = min(6, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2.2 * rows), dpi=80, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, img) in zip(axes.flat, panels):
        ax.imshow(img.permute(1, 2, 0).cpu().numpy())
        ax.set_title(name, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    rendered = Rendered("methods.png", _png(fig))
    plt.close(fig)
    return rendered


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
