"""A web demo (Gradio) over :class:`crfpose.predict.Predictor` and :mod:`crfpose.viz` (``crfpose app CHECKPOINT``).

Shape legend: K joints, H x W heatmap grid, h x w the uploaded image.

Upload an image (or take a webcam picture), choose the decoder (CNN alone, CRF marginals, CRF MAP)
and the drawing threshold; the page shows the poses over the image, each joint's CNN distribution
beside its CRF marginal, and the predictions as JSON (MMPose's per-image layout, as ``crfpose
predict`` writes) with a download. A top-down model takes the whole image as one person (single-person
photos); a detector model (Keypoint R-CNN) finds every person in it (an image without one gives none).

Offline by design: no analytics, system fonts only (nothing fetched from the internet), bound to
127.0.0.1 unless told otherwise. A file that is not an image gets a message in the page; the log
names no uploaded file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from crfpose.export import mmpose_instances, render_persons
from crfpose.figure_options import THRESHOLD
from crfpose.fileio import write_json
from crfpose.predict import Predictor, read_image

__all__ = ["DECODER_CHOICES", "NO_CHECKPOINT", "build_app", "launch"]

DECODER_CHOICES = {"CNN alone": "unary", "CRF marginals": "marginals", "CRF MAP": "map"}
NO_CHECKPOINT = (
    "crfpose app: needs a checkpoint (it trains nothing). 'crfpose demo' trains one in about 5 minutes on a "
    "CPU and writes it to ./crfpose-demo/model.pt; then run: crfpose app crfpose-demo/model.pt "
    "(any checkpoint of 'crfpose train' or 'crfpose import-official' works too)."
)


def _offline_gradio():
    """Import gradio with its analytics and version check off (set before the import reads them)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio as gr
    except ImportError:
        raise ValueError("crfpose app needs gradio: pip install -e '.[app]'") from None
    return gr


class _Session:
    """The predictor and where the per-request files go."""

    def __init__(self, predictor: Predictor, workdir: Path) -> None:
        self.predictor, self.skeleton = predictor, predictor.skeleton
        self.decoders = [d for d in DECODER_CHOICES.values() if d in predictor.model.decoders]
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)

    def predict(self, upload: Optional[str], webcam: Optional[np.ndarray], decoder_label: str, threshold: float):
        """One request, one forward pass: ``(overlay path, marginals path, JSON dict, JSON file path, message)``."""
        from crfpose.viz import plot_heatmaps, save

        nothing = (None, None, None, None)
        if upload is None and webcam is None:
            return *nothing, "Upload an image (or take a webcam picture), then press **Estimate poses**."
        decoder = DECODER_CHOICES.get(decoder_label)
        if decoder not in self.decoders:
            return *nothing, f"Unknown decoder {decoder_label!r}: expected one of {self.decoders}."
        try:
            image = read_image(upload if upload is not None else np.ascontiguousarray(webcam[..., :3]))
        except ValueError as err:
            name = Path(upload).name if upload is not None else "the webcam picture"
            return *nothing, f"**{name}** is not an image that can be read ({str(err).split(': ', 1)[-1]}): nothing was predicted."
        persons = self.predictor(image, decoder=decoder, return_maps=True)
        folder = Path(tempfile.mkdtemp(dir=self.workdir))  # this request's files
        overlay = save(render_persons(image, persons, self.skeleton, threshold), folder / "poses.png")
        marginals = None
        if persons and persons[0]["marginals"] is not None:
            figure = plot_heatmaps(None, persons[0]["unary"], persons[0]["marginals"], self.skeleton, top=None, style="screen")
            marginals = str(save(figure, folder / "marginals.png"))
        record = {
            "skeleton": self.skeleton.name,
            "keypoint_names": list(self.skeleton.joints),
            "decoder": decoder,
            "image_size": [int(image.shape[-1]), int(image.shape[-2])],
            "instances": mmpose_instances(persons),
        }
        json_path = write_json(folder / "predictions.json", record, indent=1)
        scores = np.array([p["keypoint_scores"] for p in persons]).reshape(-1)
        message = (
            f"{len(persons)} person(s), decoder **{decoder_label}**: {int((scores >= threshold).sum())} of "
            f"{scores.size} joints scored at or above the threshold {threshold:.2f} are drawn."
        )
        return str(overlay), marginals, record, str(json_path), message


def build_app(predictor: Predictor, workdir: Optional[Path] = None):
    """The Gradio Blocks page for ``predictor`` (its decoder is switched per request). Its prediction
    endpoint is ``/predict``: ``(image file, webcam picture, decoder label, threshold)`` ->
    ``(overlay, marginals, JSON, JSON file, message)``."""
    gr = _offline_gradio()
    session = _Session(predictor, Path(workdir or tempfile.mkdtemp(prefix="crfpose-app-")))
    choices = [label for label, d in DECODER_CHOICES.items() if d in session.decoders]
    default = next(label for label, d in DECODER_CHOICES.items() if d == predictor.decoder)
    with gr.Blocks(analytics_enabled=False, title="crfpose: poses with a tree CRF", delete_cache=(3600, 3600)) as app:
        gr.Markdown(
            "## crfpose: human pose with an exact tree CRF\nUpload a photo (a top-down model takes the whole image "
            "as one person's box; a detector model finds every person), choose the decoder and press **Estimate poses**."
        )
        with gr.Row():
            with gr.Column():
                with gr.Tab("Upload"):
                    upload = gr.File(label="Image", file_types=["image"], type="filepath", elem_id="upload")
                with gr.Tab("Webcam"):
                    webcam = gr.Image(label="Webcam picture", sources=["webcam"], type="numpy", elem_id="webcam")
                decoder = gr.Radio(choices, value=default, label="Decoder", elem_id="decoder")
                threshold = gr.Slider(0.0, 1.0, value=THRESHOLD, step=0.05, label="Score threshold (joints drawn)", elem_id="threshold")
                button = gr.Button("Estimate poses", variant="primary", elem_id="run")
                message = gr.Markdown(elem_id="message")
            with gr.Column():
                overlay = gr.Image(label="Poses", type="filepath", interactive=False, elem_id="overlay")
                marginals = gr.Image(
                    label="Per joint: CNN distribution | CRF marginal", type="filepath", interactive=False, elem_id="marginals"
                )
                predictions = gr.JSON(label="Predictions", elem_id="predictions")
                download = gr.File(label="Download JSON", interactive=False, elem_id="download")
        button.click(
            session.predict,
            inputs=[upload, webcam, decoder, threshold],
            outputs=[overlay, marginals, predictions, download, message],
            api_name="predict",
        )
    return app


def launch(app, host: str = "127.0.0.1", port: Optional[int] = None, block: bool = True):
    """Serve ``app`` on ``host:port`` (loopback by default) with system fonts only and no share link."""
    gr = _offline_gradio()
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    return app.launch(
        server_name=host,
        server_port=port,
        share=False,
        prevent_thread_lock=not block,
        quiet=True,
        ssr_mode=False,
        theme=theme,
        footer_links=[],
        show_error=False,
    )
