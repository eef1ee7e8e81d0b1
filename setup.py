"""crfpose: 2D human pose estimation as probabilistic structured prediction."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="crfpose",
    version="0.1.0",
    description="Human pose estimation with an exact CRF over the kinematic tree",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["crfpose", "crfpose.*"]),
    package_data={"crfpose": ["configs/*.yaml"]},  # the shipped configs (crfpose demo, crfpose train NAME)
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "pytorch-crf>=0.7.2",
        "pycocotools>=2.0.7",
        "numpy>=2.0",
        "scipy>=1.10",
        "matplotlib>=3.7",
        "Pillow>=9.0",
        "tqdm>=4.64",
        "PyYAML>=6.0",
        # the CRF's MAP for Gaussian tables (a distance transform) is compiled on the CPU; without numba
        # (or on a GPU) every table takes the plain max-plus path
        "numba>=0.60",
    ],
    entry_points={"console_scripts": ["crfpose=crfpose.cli:main"]},
    extras_require={
        # the web demo (crfpose app); gradio_client and playwright (with the system's Chromium) test it
        "app": ["gradio>=5.0"],
        # crfpose predict on video files: PyAV (FFmpeg's libraries in self-contained wheels, no system
        # ffmpeg needed; frames decode straight to numpy arrays and overlays encode to MP4)
        "video": ["av>=12"],
        "dev": [
            "pytest>=7.4",
            "hypothesis>=6.80",
            "pytest-xdist>=3.3",
            "gradio>=5.0",
            "gradio_client>=1.0",
            "playwright>=1.40",
            "av>=12",  # av: the video extra, so that CI tests crfpose predict on videos
            "ruff>=0.17,<0.18",  # the layout `ruff format --check` enforces changes between minor versions
            "setuptools>=70.1",  # builds the wheel that tests/test_packaging.py installs (offline: no build isolation)
        ],  # ruff: lint and layout, run by .ci/run (settings in ruff.toml)
    },
)
