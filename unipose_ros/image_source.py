"""`image_source`: a camera stand-in publishing a video file, a folder of images or the bundled
sample at a fixed rate, looping, with a matching CameraInfo, so the pipeline runs without a camera.

Topics: `image` (sensor_msgs/Image, bgr8), `image/compressed` (optional, jpeg), `camera_info`.
Remap them like a camera driver's, e.g. image:=/camera/image_raw.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from unipose_ros.image_conversion import array_to_compressed, array_to_image
from unipose_ros.parameters import IMAGE_SOURCE_PARAMETERS, descriptor

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def bundled_sample() -> Path:
    """The project's sample (a bundled clip when there is one, else the sample image)."""
    data = resources.files("unipose_model") / "data"
    for name in ("sample_fly.mp4", "sample_fly.avi", "sample_fly.jpg"):
        candidate = Path(str(data / name))
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no bundled sample in {data}")


class FrameReader:
    """Frames (BGR uint8) from a video, an image folder or one image, looping forever if asked."""

    def __init__(self, source: str | Path, loop: bool = True, width: int = 0, height: int = 0):
        self.path = Path(source).expanduser()
        self.loop = loop
        self.size = (int(width), int(height))
        if self.path.is_dir():
            self.images = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.images:
                raise FileNotFoundError(f"no images in {self.path}")
        elif self.path.is_file() and self.path.suffix.lower() in IMAGE_SUFFIXES:
            self.images = [self.path]
        elif self.path.is_file():
            self.images = None  # a video
        else:
            raise FileNotFoundError(f"no such image, folder or video: {self.path}")
        self._index = 0
        self._cache: dict[Path, np.ndarray] = {}
        self._video = None

    def _resize(self, frame: np.ndarray) -> np.ndarray:
        w, h = self.size
        return cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA) if w > 0 and h > 0 else frame

    def next(self) -> np.ndarray | None:
        """The next frame, or None at the end (without loop)."""
        if self.images is not None:
            if self._index >= len(self.images):
                if not self.loop:
                    return None
                self._index = 0
            path = self.images[self._index]
            self._index += 1
            if path not in self._cache:  # small folders are read once; keep memory bounded
                frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if frame is None:
                    raise ValueError(f"cannot read image {path}")
                frame = self._resize(frame)
                if len(self.images) <= 64:
                    self._cache[path] = frame
                return frame
            return self._cache[path]
        if self._video is None:
            self._video = cv2.VideoCapture(str(self.path))
            if not self._video.isOpened():
                raise ValueError(f"cannot open video {self.path}")
        ok, frame = self._video.read()
        if not ok:
            if not self.loop:
                return None
            self._video.release()
            self._video = None
            return self.next()
        return self._resize(frame)

    def close(self) -> None:
        if self._video is not None:
            self._video.release()


def camera_info_for(width: int, height: int, fov_deg: float, header) -> CameraInfo:
    """A pinhole CameraInfo (no distortion) with the given horizontal field of view."""
    fx = (width / 2.0) / np.tan(np.radians(fov_deg) / 2.0)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    info.header = header
    info.d = [0.0] * 5
    info.k = [fx, 0.0, cx, 0.0, fx, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, 0.0, 0.0, fx, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


class ImageSourceNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("image_source", **kwargs)
        for param in IMAGE_SOURCE_PARAMETERS:
            self.declare_parameter(param.name, param.default, descriptor(param, lifecycle=False))
        p = {param.name: self.get_parameter(param.name).value for param in IMAGE_SOURCE_PARAMETERS}
        self.params = p
        source = p["source"] or bundled_sample()
        self.reader = FrameReader(source, loop=p["loop"], width=p["width"], height=p["height"])
        self.image_pub = self.create_publisher(Image, "image", qos_profile_sensor_data)
        self.info_pub = self.create_publisher(CameraInfo, "camera_info", qos_profile_sensor_data)
        self.jpeg_pub = (self.create_publisher(CompressedImage, "image/compressed", qos_profile_sensor_data)
                         if p["publish_compressed"] else None)
        self.count = 0
        self.timer = self.create_timer(1.0 / p["rate"], self._tick)
        self.get_logger().info(f"publishing {source} at {p['rate']} Hz on {self.image_pub.topic_name}")

    def _tick(self) -> None:
        frame = self.reader.next()
        if frame is None:
            self.get_logger().info("end of the source; stopping")
            self.timer.cancel()
            return
        stamp = self.get_clock().now().to_msg()
        image = array_to_image(frame, "bgr8")
        image.header.stamp, image.header.frame_id = stamp, self.params["frame_id"]
        self.image_pub.publish(image)
        info = camera_info_for(image.width, image.height, self.params["fov_deg"], image.header)
        self.info_pub.publish(info)
        if self.jpeg_pub is not None:
            self.jpeg_pub.publish(array_to_compressed(frame, "jpeg", header=image.header))
        self.count += 1

    def destroy_node(self) -> None:
        self.reader.close()
        super().destroy_node()


def main(argv=None) -> int:
    rclpy.init(args=argv)
    node = None
    try:
        node = ImageSourceNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
