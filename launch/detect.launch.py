"""Keypoint detection on a camera stream: the `unipose` detector, optionally a sample camera and RViz.

    ros2 launch unipose_ros detect.launch.py                          # camera on /camera/image_raw
    ros2 launch unipose_ros detect.launch.py use_sample_source:=true rviz:=true   # no camera: flies
    ros2 launch unipose_ros detect.launch.py model:=fly               # the bundled fly model
    ros2 launch unipose_ros detect.launch.py image:=/my_cam/image compressed:=true prompt:="cat, dog"
    ros2 launch unipose_ros detect.launch.py image:=/camera/color/image_raw \
        depth_image:=/camera/aligned_depth_to_color/image_raw camera_info:=/camera/color/camera_info

Arguments left empty take their value from the params file (config/detector.yaml). The one
exception: the bundled sample (use_sample_source:=true without sample_source) is the fly clip, so
without model:= or checkpoint:= it runs with the bundled fly model and its prompt.
"""
import os
from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

SHARE = Path(__file__).resolve().parent.parent  # share/unipose_ros (or the source tree)

ARGUMENTS = {
    "image": ("/camera/image_raw", "Image topic (raw); with compressed:=true its /compressed is used."),
    "camera_info": ("", "CameraInfo topic. Empty: camera_info next to the image topic."),
    "depth_image": ("", "Depth image aligned to the colour image (16UC1 mm or 32FC1 m): 3-D keypoints "
                        "(use_depth). Empty: no depth."),
    "depth_tolerance": ("", "Largest colour/depth stamp difference, seconds. Empty: params file."),
    "target_frame": ("", "tf2 frame for the 3-D keypoints (needs tf2_ros). Empty: params file."),
    "tracking": ("", "true/false: track ids across frames. Empty: params file."),
    "compressed": ("false", "Subscribe to IMAGE/compressed (jpeg/png) instead of the raw image."),
    "prompt": ("", "Initial prompt, e.g. 'person' or 'person: nose, left eye'. Empty: params file."),
    "support_image": ("", "Visual prompt instead of the text prompt: support image or VIDEO#frame=N "
                          "(with support_keypoints). Empty: params file."),
    "support_keypoints": ("", "Keypoints of support_image (COCO json or 'name: x y' lines). Empty: params file."),
    "model": ("", "Model configuration (unipose_swint, unipose_tiny, ...) or fly (the bundled fly model, "
                  "no checkpoint needed). Empty: params file."),
    "checkpoint": ("", "Checkpoint path ('reference' for test weights). Empty: params file."),
    "text_encoder": ("", "auto, clip, hash or a feature file. Empty: params file."),
    "device": ("", "auto, cpu, cuda or cuda:N. Empty: params file."),
    "backend": ("", "pytorch, onnxruntime or tensorrt (an exported graph, built on first use and cached). "
                    "Empty: params file."),
    "params_file": (str(SHARE / "config" / "detector.yaml"), "Detector parameters (YAML)."),
    "use_sample_source": ("false", "Start image_source publishing the bundled fly clip on IMAGE (no camera "
                                   "needed); without model/checkpoint the detector runs the bundled fly model."),
    "sample_source": ("", "Video, image folder or image for image_source. Empty: the bundled fly clip."),
    "sample_rate": ("10.0", "Frames per second of image_source."),
    "rviz": ("false", "Start rviz2 with config/unipose.rviz (annotated image and markers); needs rviz2 "
                      "(ros-$ROS_DISTRO-rviz2)."),
}
DETECTOR_OVERRIDES = ("prompt", "support_image", "support_keypoints", "model", "checkpoint", "text_encoder",
                      "device", "backend")


def _true(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def _camera_info_topic(image_topic: str) -> str:
    """image_transport convention: the CameraInfo sits next to the image topic."""
    parent = image_topic.rstrip("/").rsplit("/", 1)[0]
    return f"{parent}/camera_info"


def _check_rviz2() -> None:
    """Fail before any node starts when rviz2 is missing (launch_ros would find out only when it
    starts rviz2, after the detector and image_source, and leave those running)."""
    try:
        from ament_index_python.packages import get_package_prefix
        prefix = get_package_prefix("rviz2")
    except (ImportError, LookupError, OSError):  # not installed, or no AMENT_PREFIX_PATH at all
        prefix = None
    if prefix is None or not os.access(Path(prefix) / "lib" / "rviz2" / "rviz2", os.X_OK):
        distro = os.environ.get("ROS_DISTRO") or "<distro>"
        raise RuntimeError(f"rviz:=true needs rviz2, which is not installed here: install it "
                           f"(sudo apt install ros-{distro}-rviz2, then source the ROS setup again) or "
                           f"leave rviz:=false and watch /unipose/image_annotated elsewhere. Nothing was started.")


def _launch_setup(context):
    arg = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    if _true(arg["rviz"]):
        _check_rviz2()
    image = arg["image"]
    camera_info = arg["camera_info"] or _camera_info_topic(image)
    overrides = {name: arg[name] for name in DETECTOR_OVERRIDES if arg[name]}
    if _true(arg["use_sample_source"]) and not arg["sample_source"] and not (arg["model"] or arg["checkpoint"]):
        # the bundled clip shows flies: run the model made for it, with its own prompt ("" = the model's)
        overrides.update(model="fly", checkpoint="", prompt=arg["prompt"])
    overrides["use_compressed"] = _true(arg["compressed"])
    if arg["tracking"]:
        overrides["tracking"] = _true(arg["tracking"])
    if arg["depth_tolerance"]:
        overrides["depth_tolerance"] = float(arg["depth_tolerance"])
    if arg["target_frame"]:
        overrides["target_frame"] = arg["target_frame"]
    remappings = [("image", image), ("image/compressed", image + "/compressed"), ("camera_info", camera_info)]
    if arg["depth_image"]:
        overrides["use_depth"] = True
        remappings.append(("depth_image", arg["depth_image"]))
    nodes = [Node(
        package="unipose_ros", executable="detector", name="unipose", output="screen",
        parameters=[arg["params_file"], overrides],
        remappings=remappings,
    )]
    if _true(arg["use_sample_source"]):
        nodes.append(Node(
            package="unipose_ros", executable="image_source", name="image_source", output="screen",
            parameters=[{"source": arg["sample_source"], "rate": float(arg["sample_rate"]),
                         "publish_compressed": _true(arg["compressed"])}],
            remappings=[("image", image), ("image/compressed", image + "/compressed"),
                        ("camera_info", camera_info)],
        ))
    if _true(arg["rviz"]):
        nodes.append(Node(package="rviz2", executable="rviz2", name="rviz2", output="screen",
                          arguments=["-d", str(SHARE / "config" / "unipose.rviz")]))
    return nodes


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, (default, text) in ARGUMENTS.items()]
        + [OpaqueFunction(function=_launch_setup)])
