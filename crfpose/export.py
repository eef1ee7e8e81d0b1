"""Writing predictions: MMPose-layout JSON per image or video, a COCO results file, overlays (PNG per
image, MP4 per video), and reading video frames: what ``crfpose predict`` writes and the app downloads.

Shape legend: N persons, K joints; frames are ``(h, w, 3)`` uint8 RGB arrays.

Outputs under a folder ``out``: ``predictions/<name>.json`` per image (MMPose's per-image layout: a list
of instances ``{"keypoints": [[x, y], ...], "keypoint_scores": [...], "bbox": [[x1, y1, x2, y2]],
"bbox_score", "score"}``; note MMPose's corner box, where :class:`~crfpose.predict.Predictor` gives
``(x, y, w, h)``), per video one JSON ``[{"frame_id", "instances"}, ...]``; with ``draw``, overlays in
``visualizations/`` (PNG per image, MP4 per video). ``<name>`` is the input's path relative to the
folder all inputs share, without its suffix (``photos/a/x.jpg`` -> ``a/x``); inputs that would share a
name keep their suffix (``x.jpg``, ``x.png``), so no result replaces another. Results of an earlier
call are not overwritten unless asked. Unreadable files are named, skipped and counted. Every file is
written atomically.
"""

from __future__ import annotations

import glob
import os
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np

from crfpose.figure_options import THRESHOLD
from crfpose.fileio import atomic_write, remove_stale_temps, write_json
from crfpose.progress import Progress

__all__ = [
    "VIDEO_SUFFIXES",
    "collect_sources",
    "output_names",
    "mmpose_instances",
    "render_persons",
    "read_video",
    "write_video",
    "PredictionWriter",
]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def output_names(paths: Sequence[Path]) -> dict[Path, Path]:
    """The output name of each input (see the module docstring): its path relative to the inputs' common
    folder without the suffix, or with it where two inputs would share a name (then ``-2``, ``-3`` ... if
    even that repeats)."""
    absolute = [Path(os.path.abspath(p)) for p in paths]
    if not absolute:
        return {}
    root = Path(os.path.commonpath([p.parent for p in absolute]))
    relative = [p.relative_to(root) for p in absolute]
    stems = Counter(r.with_suffix("") for r in relative)
    names: dict[Path, Path] = {}
    for path, rel in zip(paths, relative):
        name = rel.with_suffix("") if stems[rel.with_suffix("")] == 1 else rel
        candidate, n = name, 1
        while candidate in names.values():
            n += 1
            candidate = name.with_name(f"{name.name}-{n}")
        names[path] = candidate
    return names


def collect_sources(sources: Sequence[str]) -> list[Path]:
    """Files named by ``sources``: files as given, folders' files (sorted, not recursive), glob matches
    (sorted). A source that names nothing is a ValueError."""
    found: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            if not files:
                raise ValueError(
                    f"SOURCE: the folder {source} holds no files (images and videos are read from it, not from its subfolders)"
                )
            found += files
        elif path.is_file():
            found.append(path)
        elif glob.has_magic(source) and (matches := sorted(glob.glob(source))):
            found += [Path(m) for m in matches if Path(m).is_file()]
        else:
            raise ValueError(f"SOURCE: no such file, folder or glob match: {source}")
    unique: dict[str, Path] = {}
    for path in found:  # each file once, as first named
        unique.setdefault(os.path.abspath(path), path)
    return list(unique.values())


def mmpose_instances(persons: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Persons of :class:`~crfpose.predict.Predictor` in MMPose's JSON layout (corner boxes)."""
    out = []
    for p in persons:
        x, y, w, h = p["bbox"]
        out.append(
            {
                "keypoints": np.round(p["keypoints"], 3).tolist(),
                "keypoint_scores": np.round(p["keypoint_scores"], 5).tolist(),
                "bbox": [[x, y, x + w, y + h]],
                "bbox_score": p["bbox_score"],
                "score": p["score"],
            }
        )
    return out


def render_persons(image: Any, persons: list[dict[str, Any]], skeleton, threshold: float = THRESHOLD) -> Any:
    """The overlay figure of :class:`~crfpose.predict.Predictor` ``persons`` on ``image`` (a ``(3, h, w)``
    tensor or ``(h, w, 3)`` array) at the image's own size (:func:`crfpose.viz.plot_poses`, no legend);
    joints scored under ``threshold`` are not drawn."""
    from crfpose.viz import Style, as_image, plot_poses

    k = skeleton.num_joints
    keypoints = np.stack([p["keypoints"] for p in persons]) if persons else np.zeros((0, k, 2))
    scores = np.stack([p["keypoint_scores"] for p in persons]) if persons else np.zeros((0, k))
    boxes = np.array([p["bbox"] for p in persons]).reshape(-1, 4)
    pixels = as_image(image)  # (h, w, 3)
    style = Style(width=pixels.shape[1] / 100, dpi=100)  # one figure pixel per image pixel
    return plot_poses(pixels, keypoints, skeleton, scores=scores, boxes=boxes, threshold=threshold, legend=False, style=style)


def _figure_to_array(fig) -> np.ndarray:
    """The ``(h, w, 3)`` uint8 pixels of a matplotlib figure drawn on the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def read_video(path: Path) -> tuple[Iterator[np.ndarray], float, Optional[int]]:
    """``(frames, fps, count)``: the frames of a video file as ``(h, w, 3)`` uint8 RGB arrays (PyAV)."""
    import av

    try:
        container = av.open(str(path))
        stream = container.streams.video[0]
    except (av.error.FFmpegError, IndexError, OSError) as err:
        raise ValueError(f"video {path}: not a readable video ({err})") from None
    fps = float(stream.average_rate or 25)
    count = stream.frames or None

    def frames() -> Iterator[np.ndarray]:
        with container:
            try:
                for frame in container.decode(stream):
                    yield frame.to_ndarray(format="rgb24")
            except av.error.FFmpegError as err:
                print(f"crfpose predict: {path}: decoding stopped early ({err})", file=sys.stderr)

    return frames(), fps, count


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float) -> Path:
    """Encode ``(h, w, 3)`` uint8 frames as an MP4 (MPEG-4 part 2, which every FFmpeg build has), atomically."""
    import av

    def encode(file) -> None:
        with av.open(file, mode="w", format="mp4") as container:
            stream = None
            for array in frames:
                h, w = array.shape[:2]
                array = array[: h - h % 2, : w - w % 2]  # the encoder wants even sizes
                if stream is None:
                    stream = container.add_stream("mpeg4", rate=max(1, round(fps)))
                    stream.height, stream.width = array.shape[:2]
                    stream.pix_fmt, stream.bit_rate = "yuv420p", 4_000_000
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")):
                    container.mux(packet)
            if stream is not None:
                for packet in stream.encode():
                    container.mux(packet)

    return atomic_write(path, encode, binary=True)


class PredictionWriter:
    """Runs a :class:`~crfpose.predict.Predictor` over files and writes what ``crfpose predict`` writes.

    ``detections`` (from :func:`crfpose.detect.load_detections`) gives the boxes per image; ``image_ids``
    (file name -> COCO image id, from ``--annotations``) numbers the ``--coco-json`` records (else running
    numbers, with a ``<coco-json stem>.image_ids.json`` mapping beside it).
    """

    def __init__(
        self,
        predictor,
        out: os.PathLike,
        *,
        draw: bool = False,
        coco_json: Optional[os.PathLike] = None,
        detections: Optional[dict[str, np.ndarray]] = None,
        image_ids: Optional[dict[str, int]] = None,
        draw_threshold: float = THRESHOLD,
    ) -> None:
        self.predictor, self.out, self.draw, self.draw_threshold = predictor, Path(out), draw, draw_threshold
        self.coco_json = Path(coco_json) if coco_json else None
        self.detections, self.image_ids = detections, image_ids
        self.records: list[dict[str, Any]] = []
        self.names: dict[Path, Path] = {}  # input -> output name (set by run)
        self.numbers: dict[str, int] = {}
        self.skipped: list[str] = []
        self.processed = 0

    def _skip(self, path: Path, reason: str) -> None:
        self.skipped.append(str(path))
        print(f"crfpose predict: skipped {path}: {reason}", file=sys.stderr)

    def _boxes(self, path: Path, image) -> Optional[np.ndarray]:
        if self.detections is None:
            return None
        from crfpose.detect import boxes_for

        return boxes_for(self.detections, path)

    def _save_overlay(self, image, persons, path: Path) -> None:
        from crfpose.viz import save

        fig = render_persons(image, persons, self.predictor.skeleton, self.draw_threshold)
        save(fig, path)

    def images(self, paths: Sequence[Path], progress: Progress) -> None:
        """Predict for image files in chunks (the next chunk decodes in threads while the model runs)."""
        from crfpose.predict import read_image

        def load(path: Path):
            try:
                return read_image(path)
            except ValueError as err:
                return str(err)

        chunk = max(1, self.predictor.batch_size)
        groups = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            pending = [pool.submit(lambda g=g: [load(p) for p in g]) for g in groups[:1]]
            for index, group in enumerate(groups):
                loaded = pending.pop(0).result()
                if index + 1 < len(groups):
                    pending.append(pool.submit(lambda g=groups[index + 1]: [load(p) for p in g]))
                good = [(p, t) for p, t in zip(group, loaded) if not isinstance(t, str)]
                for p, t in zip(group, loaded):
                    if isinstance(t, str):
                        self._skip(p, t)
                if good:
                    boxes = None if self.detections is None else [self._boxes(p, t) for p, t in good]
                    results = self.predictor([t for _, t in good], boxes, names=[str(p) for p, _ in good])
                    for (path, tensor), persons in zip(good, results):
                        self._write_image(path, tensor, persons)
                progress.step(len(group))

    def _write_image(self, path: Path, tensor, persons: list[dict[str, Any]]) -> None:
        write_json(self._target(path, "predictions", ".json"), mmpose_instances(persons))
        if self.coco_json is not None:
            image_id = self._image_id(path)
            for p in persons:
                xy = np.concatenate([p["keypoints"], p["keypoint_scores"][:, None]], axis=1)
                self.records.append({"image_id": image_id, "keypoints": xy, "score": p["score"]})
        if self.draw:
            self._save_overlay(tensor, persons, self._target(path, "visualizations", ".png"))
        self.processed += 1

    def _image_id(self, path: Path) -> int:
        if self.image_ids is not None:
            if path.name not in self.image_ids:
                raise ValueError(f"--annotations: no image named {path.name!r} (needed for --coco-json)")
            return self.image_ids[path.name]
        return self.numbers.setdefault(str(path), len(self.numbers) + 1)

    def video(self, path: Path, progress: Progress) -> None:
        """One JSON for the whole video (``[{"frame_id", "instances"}]``) and, with ``draw``, an MP4 overlay."""
        frames, fps, _ = read_video(path)
        entries: list[dict[str, Any]] = []
        overlays: list[np.ndarray] = []
        batch: list[np.ndarray] = []

        def flush() -> None:
            names = [f"{path} frame {len(entries) + i}" for i in range(len(batch))]
            for frame, persons in zip(batch, self.predictor(list(batch), names=names)):
                entries.append({"frame_id": len(entries), "instances": mmpose_instances(persons)})
                if self.draw:
                    overlays.append(_figure_to_array(render_persons(frame, persons, self.predictor.skeleton, self.draw_threshold)))
            progress.step(len(batch))
            batch.clear()

        for frame in frames:
            batch.append(frame)
            if len(batch) == self.predictor.batch_size:
                flush()
        if batch:
            flush()
        if not entries:
            self._skip(path, "no frame could be decoded")
            return
        write_json(self._target(path, "predictions", ".json"), entries)
        if self.draw:
            write_video(self._target(path, "visualizations", ".mp4"), overlays, fps)
        self.processed += 1

    def _target(self, path: Path, folder: str, suffix: str) -> Path:
        name = self.names[path]
        return self.out / folder / name.with_name(name.name + suffix)

    def targets(self, paths: Sequence[Path]) -> list[Path]:
        """Every file a run over ``paths`` writes."""
        self.names = output_names(paths)
        files = [self._target(p, "predictions", ".json") for p in paths]
        if self.draw:
            files += [self._target(p, "visualizations", ".mp4" if _is_video(p) else ".png") for p in paths]
        if self.coco_json is not None:
            files += [self.coco_json] + ([] if self.image_ids else [self.coco_json.with_name(f"{self.coco_json.stem}.image_ids.json")])
        return files

    def run(self, paths: Sequence[Path], overwrite: bool = False) -> None:
        """Images first (batched across files), then each video; then the COCO results file. Files that
        an earlier call wrote are a ValueError (before any work) unless ``overwrite``."""
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"--out {self.out}: is a file, expected a folder for the results")
        targets = self.targets(paths)
        for folder in {f.parent for f in targets}:
            remove_stale_temps(folder)  # what a killed earlier call's atomic writes left
        earlier = [f for f in targets if f.exists()]
        if earlier and not overwrite:
            raise ValueError(
                f"--out {self.out}: would overwrite {len(earlier)} earlier result(s), e.g. {earlier[0]}; "
                "pass --overwrite to replace them, or choose another --out"
            )
        images = [p for p in paths if not _is_video(p)]
        progress = Progress("crfpose predict", len(images) or None, "images")
        try:
            self.images(images, progress)
            for path in (p for p in paths if _is_video(p)):
                try:
                    self.video(path, progress)
                except ValueError as err:
                    self._skip(path, str(err))
        finally:
            progress.close()
        if self.coco_json is not None:
            self._write_coco()

    def _write_coco(self) -> None:
        from crfpose.metrics import export_coco_results

        k = self.predictor.skeleton.num_joints
        export_coco_results(
            self.coco_json,
            [r["image_id"] for r in self.records],
            np.stack([r["keypoints"] for r in self.records]) if self.records else np.zeros((0, k, 3)),
            [r["score"] for r in self.records],
        )
        if self.image_ids is None:
            mapping = {str(i): name for name, i in self.numbers.items()}
            write_json(self.coco_json.with_name(f"{self.coco_json.stem}.image_ids.json"), mapping)
