"""unipose_ros: prompt-based keypoint detection (UniPose / X-Pose) for ROS 2 and plain Python.

Python packaging for pip. A colcon workspace builds the same package through package.xml and
CMakeLists.txt (the messages need ament_cmake; see README, "Why CMake").
"""
from setuptools import find_packages, setup

setup(
    name="unipose_ros",
    version="0.1.0",
    description="UniPose (X-Pose): detect any keypoints from text or visual prompts, for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["unipose_model", "unipose_model.*", "unipose_train", "unipose_train.*",
                                    "unipose_ros", "unipose_ros.*"]),
    package_data={"unipose_model": ["data/*.json", "data/*.jpg", "data/*.png", "data/*.txt", "data/*.pth",
                                    "data/*.mp4"],
                  "unipose_train": ["data/*.json", "configs/*.yaml"]},
    include_package_data=True,
    install_requires=[
        "torch>=2.4,<2.15",
        "torchvision>=0.19,<0.30",
        "open-clip-torch>=2.24,<3.4",
        "numpy>=1.26,<2.5",
        "scipy>=1.11,<1.18",
        "opencv-python-headless>=4.8",
        "pillow>=10,<14",
        "tqdm>=4.60,<5",
        "pycocotools>=2.0.7,<2.1",
        "h5py>=3.8,<4",
        "pyyaml>=6,<7",
        "tensorboard>=2.14,<3",
    ],
    extras_require={"test": ["pytest>=8,<10"],
                    # ONNX export and the onnxruntime backend (issue 6); TensorRT comes with its own wheels
                    "export": ["onnx>=1.20,<1.24", "onnxscript>=0.7,<0.8", "onnx-ir>=1.0,<2",
                               "onnxruntime>=1.22,<1.32"],
                    "gpu": ["triton>=3.4,<3.9"]},
    entry_points={
        "console_scripts": [
            "unipose = unipose_model.cli:main",
            "unipose-data = unipose_train.unikpt.cli:main",
            "unipose-eval = unipose_train.evaluation.cli:main",
            "unipose-train = unipose_train.train_cli:main",
            "unipose-train-refiner = unipose_train.heatmap_refiner_train:main",
            "unipose-mp100 = unipose_train.evaluation.mp100:main",
            "unipose-rank-supports = unipose_train.evaluation.support_ranking:main",
            "unipose-detector = unipose_ros.detector_node:main",
            "unipose-image-source = unipose_ros.image_source:main",
            "unipose-bag = unipose_ros.bag:main",
            "unipose-demo = unipose_ros.demo:main",
        ],
        # subcommands of `unipose` that live outside unipose_model (unipose_model/cli.py, PLUGIN_GROUP)
        "unipose.commands": ["bag = unipose_ros.bag"],
    },
)
