"""unipose_ros: prompt-based keypoint detection (UniPose / X-Pose) for ROS 2 and plain Python.

Python packaging for pip. A colcon workspace builds the same package through package.xml and
CMakeLists.txt (the messages need ament_cmake; see README, "Why CMake").

Dependencies. requirements.txt pins the set that CI tests (torch 2.14.1, numpy 2.4.6, ...). The
floors below are NOT tested here (only the pins are); each is the oldest release believed to have
what the code uses: torch 2.4 for `torch.library.custom_op` (export/trt_plugin.py) and
`torch.load(weights_only=True, mmap=...)`, torchvision 0.19 as its matching release, numpy 1.26 as
the last numpy 1 line (the code has no numpy-2-only calls), the others as they were when the
project started. There are no upper caps: a cap with no known break (e.g. `torch<2.15`) makes pip
downgrade the torch a user already has. Inference (`unipose predict`, `Predictor`, the nodes) needs
only install_requires; training, `unipose bag` and ONNX export are extras, and the modules that
need them say `pip install 'unipose_ros[<extra>]'` when they are missing (unipose_model/extras.py).
"""
from pathlib import Path

from setuptools import find_namespace_packages, setup

HERE = Path(__file__).resolve().parent
VERSION = "0.1.0"  # keep equal to package.xml's <version> (test/test_packaging.py checks)

# The three folders of data are packages without __init__.py (namespace packages): listing them as
# packages (not only as package_data of their parent) is what setuptools wants; otherwise it warns
# "Package would be ignored" for each.
PACKAGES = find_namespace_packages(include=["unipose_model", "unipose_model.*", "unipose_train", "unipose_train.*",
                                            "unipose_ros", "unipose_ros.*"],
                                   exclude=["*.__pycache__"])

setup(
    name="unipose_ros",
    version=VERSION,
    description="UniPose (X-Pose): detect any keypoints from text or visual prompts, for ROS 2 and Python",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    author="The unipose_ros authors",
    author_email="unipose-ros@users.noreply.github.com",
    maintainer="unipose_ros maintainers",
    maintainer_email="unipose-ros@users.noreply.github.com",
    url="https://github.com/unipose-ros/unipose_ros",
    project_urls={
        "Documentation": "https://github.com/unipose-ros/unipose_ros/tree/main/docs",
        "Source": "https://github.com/unipose-ros/unipose_ros",
        "Issues": "https://github.com/unipose-ros/unipose_ros/issues",
        "Upstream model (X-Pose)": "https://github.com/IDEA-Research/X-Pose",
    },
    license="Apache-2.0",
    license_files=["LICENSE"],
    keywords=["pose estimation", "keypoint detection", "UniPose", "X-Pose", "ROS 2", "open vocabulary",
              "pytorch", "computer vision", "robotics"],
    classifiers=[
        "Development Status :: 4 - Beta",
        "Intended Audience :: Developers",
        "Intended Audience :: Science/Research",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
    python_requires=">=3.10",
    packages=PACKAGES,
    package_data={"unipose_model.data": ["*.json", "*.jpg", "*.png", "*.txt", "*.pth", "*.mp4"],
                  "unipose_train.data": ["*.json"],
                  "unipose_train.configs": ["*.yaml", "**/*.yaml"]},  # ** : configs in subfolders too
    install_requires=[
        "torch>=2.4",
        "torchvision>=0.19",
        "open-clip-torch>=2.24",
        "huggingface_hub>=0.23",  # imported directly for the CLIP weights (open_clip needs it too)
        "numpy>=1.26",
        "scipy>=1.11",
        "opencv-python-headless>=4.8",
        "pillow>=10",
        "tqdm>=4.60",
        # Small and pure Python: the training configs are YAML, so `unipose-train own_labels --help`
        # and reading a config work before the [train] extra is installed.
        "pyyaml>=6",
    ],
    extras_require={
        # unipose-train, unipose-eval, unipose-data, unipose-mp100: configs, logs, COCO evaluation,
        # DeepLabCut/SLEAP/DeepPoseKit label files
        "train": ["tensorboard>=2.14", "pycocotools>=2.0.7", "h5py>=3.8"],
        # `unipose bag`. rclpy and the message packages come from a ROS 2 install (apt + colcon) or,
        # without one, from the ros-jazzy-* wheels of requirements-ros.txt (never both in one
        # environment, hence not listed here); the project's own messages are built by colcon or
        # scripts/build_msgs.sh (docs/ROS.md).
        "ros": ["rosbags>=0.11.9"],
        # ONNX export and the onnxruntime backend (issue 6); TensorRT comes with its own wheels
        "export": ["onnx>=1.20", "onnxscript>=0.7", "onnx-ir>=1.0", "onnxruntime>=1.22"],
        "gpu": ["triton>=3.4"],
        "test": ["pytest>=8"],
    },
    entry_points={
        # The ROS scripts go through unipose_ros.entry: --help without ROS, one line when rclpy or
        # the generated messages are missing.
        "console_scripts": [
            "unipose = unipose_model.cli:main",
            "unipose-data = unipose_train.unikpt.cli:main",
            "unipose-eval = unipose_train.evaluation.cli:main",
            "unipose-train = unipose_train.train_cli:main",
            "unipose-train-refiner = unipose_train.heatmap_refiner_train:main",
            "unipose-mp100 = unipose_train.evaluation.mp100:main",
            "unipose-rank-supports = unipose_train.evaluation.support_ranking:main",
            "unipose-detector = unipose_ros.entry:detector",
            "unipose-image-source = unipose_ros.entry:image_source",
            "unipose-bag = unipose_ros.entry:bag",
            "unipose-demo = unipose_ros.entry:demo",
        ],
        # subcommands of `unipose` that live outside unipose_model (unipose_model/cli.py, PLUGIN_GROUP)
        "unipose.commands": ["bag = unipose_ros.bag"],
    },
)
