"""atom_tf: robust out-of-distribution detection (ATOM) in Keras 3 / TensorFlow."""

from setuptools import find_packages, setup

EXPORT = ["tf2onnx==1.17.0", "onnx>=1.17", "onnxruntime>=1.20", "ai-edge-litert==2.3.0"]

setup(
    name="atom_tf",
    version="0.1.0",
    description="Adversarial Training with informative Outlier Mining (ATOM) for Keras 3 / TensorFlow",
    python_requires=">=3.11",
    packages=find_packages(include=["atom_tf", "atom_tf.*"]),
    # the shipped detectors (atom_tf/pretrained.py)
    package_data={"atom_tf": ["pretrained_runs/*/*"]},
    install_requires=[
        "tensorflow>=2.18,<2.23",
        "keras>=3.6,<4",
        "tensorflow-datasets>=4.9.6,<5",
        "importlib_resources>=5",  # tfds imports it lazily when it downloads and prepares a dataset
        "tensorboard>=2.18",
        "numpy>=1.26,<3",
        "scipy>=1.11",
        "scikit-learn>=1.3",
        "scikit-image>=0.22",
        "absl-py>=2.0",
        "imagecorruptions==1.1.2",
        "opencv-python-headless>=4.8",
        "matplotlib>=3.8",
        "pillow>=10",
        "psutil>=5.9",
    ],
    extras_require={
        # bin/export.py's LiteRT and ONNX formats (the SavedModel needs nothing more)
        "export": EXPORT,
        # ART: a peer to check the attacks against; the export runtimes for their tests
        "test": ["pytest>=8", "adversarial-robustness-toolbox==1.20.1", *EXPORT],
        "dev": ["pytest>=8", "ruff>=0.6", "adversarial-robustness-toolbox==1.20.1", *EXPORT],
        "gpu": ["tensorflow[and-cuda]>=2.18,<2.23"],
        "bench": ["torch==2.13.0"],  # bench/pytorch_step.py, the reference of bench/train_step.py
    },
)
