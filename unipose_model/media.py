"""Reading images and videos, writing annotated results (OpenCV).

Images are returned as BGR uint8 arrays (OpenCV's order); pass ``color="bgr"`` to the predictor.
EXIF orientation is ignored by default, as in the official pipeline (PIL ``Image.open``), so
coordinates refer to the stored pixel grid, like COCO annotations; ``exif_orientation=True``
applies it (a phone photo comes out as it is displayed, and so do the coordinates).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


class MediaError(ValueError):
    """A file that is missing, unreadable or of an unsupported kind (message names the file)."""


def is_image_path(path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def is_video_path(path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _check_file(path: Path) -> None:
    if not path.exists():
        raise MediaError(f"file not found: {path}")
    if not path.is_file():
        raise MediaError(f"not a file: {path}")


def read_image(path, color: str = "bgr", exif_orientation: bool = False) -> np.ndarray:
    """Read an image file as HxWx3 uint8 (``color`` "bgr" or "rgb"); grayscale becomes 3 channels.

    exif_orientation: rotate / mirror the pixels as the file's EXIF orientation tag says (as
    image viewers display it); default False, the stored pixel grid (the official behaviour)."""
    path = Path(path)
    _check_file(path)
    if not is_image_path(path):
        raise MediaError(f"unsupported image format {path.suffix or '(no extension)'!r}: {path} "
                         f"(supported: {', '.join(IMAGE_EXTENSIONS)})")
    # imdecode from bytes: cv2.imread cannot open some non-ASCII paths on every platform
    data = np.fromfile(str(path), dtype=np.uint8)
    flags = cv2.IMREAD_COLOR if exif_orientation else cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise MediaError(f"cannot decode image {path} (corrupt or not really a {path.suffix} file)")
    return image[:, :, ::-1].copy() if color == "rgb" else image


def split_frame_reference(text) -> tuple[Path, int] | None:
    """'video.mp4#frame=N' -> (video path, N); None for anything else. The form COCO exports of
    labelled video frames use (and the fly clip's labels)."""
    text = str(text)
    if "#frame=" not in text:
        return None
    video, _, index = text.rpartition("#frame=")
    try:
        return Path(video), int(index)
    except ValueError:
        raise MediaError(f"bad frame reference {text!r}: expected VIDEO#frame=N with N a frame number") from None


def read_video_frame(path, index: int, color: str = "bgr") -> np.ndarray:
    """Frame `index` (0-based) of a video as HxWx3 uint8; a clear error past the last frame."""
    path = Path(path)
    _check_file(path)
    if index < 0:
        raise MediaError(f"frame numbers start at 0, got {index} for {path}")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise MediaError(f"cannot open video {path} (unsupported codec or corrupt file)")
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = cap.read()
    finally:
        cap.release()
    if not ok:
        raise MediaError(f"cannot read frame {index} of {path} (the video has fewer frames, or is corrupt)")
    return frame[:, :, ::-1].copy() if color == "rgb" else frame


def write_image(path, image: np.ndarray) -> Path:
    """Write a BGR image; the format follows the extension (e.g. .png, .jpg)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise MediaError(f"cannot encode image for {path}")
    buf.tofile(str(path))
    return path


def collect_inputs(inputs) -> list[Path]:
    """Expand files and directories (images and videos directly inside, sorted) into a file list."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and (is_image_path(f) or is_video_path(f)))
            if not found:
                raise MediaError(f"no images or videos in directory {p}")
            files.extend(found)
        else:
            _check_file(p)
            if not (is_image_path(p) or is_video_path(p)):
                raise MediaError(f"unsupported file type {p.suffix or '(no extension)'!r}: {p} (images: "
                                 f"{', '.join(IMAGE_EXTENSIONS)}; videos: {', '.join(VIDEO_EXTENSIONS)})")
            files.append(p)
    return files


class VideoReader:
    """Iterate the frames (BGR uint8) of a video file.

    ``frame_count`` is the container's claim (may be 0 or approximate for some formats);
    iteration simply runs until the decoder stops.
    """

    def __init__(self, path):
        self.path = Path(path)
        _check_file(self.path)
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise MediaError(f"cannot open video {self.path} (unsupported codec or corrupt file)")
        self.frame_count = max(0, int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and np.isfinite(fps) and fps > 0 else 25.0
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            ok, frame = self._cap.read()
            if not ok:
                return
            yield frame

    def __len__(self) -> int:
        return self.frame_count

    def close(self) -> None:
        self._cap.release()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VideoWriter:
    """Write BGR frames to an .mp4 (codec mp4v); the size is taken from the first frame."""

    def __init__(self, path, fps: float = 25.0, fourcc: str = "mp4v"):
        self.path = Path(path)
        self.fps = fps
        self.fourcc = fourcc
        self._writer = None
        self.frames_written = 0

    def write(self, frame: np.ndarray) -> None:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = frame.shape[:2]
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*self.fourcc),
                                           self.fps, (w, h))
            if not self._writer.isOpened():
                raise MediaError(f"cannot open video writer for {self.path} (codec {self.fourcc})")
            self._size = (w, h)
        if (frame.shape[1], frame.shape[0]) != self._size:
            frame = cv2.resize(frame, self._size)
        self._writer.write(np.ascontiguousarray(frame))
        self.frames_written += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
