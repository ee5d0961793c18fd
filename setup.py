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
    packages=find_packages(include=["unipose_model", "unipose_model.*", "training", "training.*",
                                    "unipose_ros", "unipose_ros.*"]),
    package_data={"unipose_model": ["data/*.json", "data/*.jpg", "data/*.png", "data/*.txt"]},
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
    ],
    extras_require={"test": ["pytest>=8,<10"]},
    entry_points={
        "console_scripts": [
            "unipose = unipose_model.cli:main",
        ],
    },
)
