"""The image source's readers (folder, image, video, bundled sample) and its CameraInfo."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from std_msgs.msg import Header

from unipose_ros.image_source import FrameReader, bundled_sample, camera_info_for


def write_images(folder, n=2):
    folder.mkdir()
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:02d}.png"), np.full((8, 10, 3), 40 * (i + 1), np.uint8))
    return folder


def test_folder_loops_in_name_order(tmp_path):
    reader = FrameReader(write_images(tmp_path / "imgs"))
    values = [int(reader.next()[0, 0, 0]) for _ in range(5)]
    assert values == [40, 80, 40, 80, 40]


def test_folder_without_loop_ends_and_resizes(tmp_path):
    reader = FrameReader(write_images(tmp_path / "imgs"), loop=False, width=20, height=16)
    assert reader.next().shape == (16, 20, 3)
    assert reader.next() is not None and reader.next() is None


def test_video_loops(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    if not writer.isOpened():
        pytest.skip("no video encoder in this OpenCV")
    for i in range(3):
        writer.write(np.full((24, 32, 3), 60 * (i + 1), np.uint8))
    writer.release()
    reader = FrameReader(path)
    frames = [reader.next() for _ in range(7)]
    assert all(f is not None and f.shape == (24, 32, 3) for f in frames)
    assert abs(int(frames[3][5, 5, 0]) - int(frames[0][5, 5, 0])) <= 3  # looped to the first frame
    reader.close()


def test_missing_source_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such image"):
        FrameReader(tmp_path / "nothing.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        FrameReader(tmp_path / "empty")


def test_bundled_sample_is_readable():
    frame = FrameReader(bundled_sample()).next()
    assert frame.ndim == 3 and frame.shape[2] == 3


def test_camera_info_pinhole():
    info = camera_info_for(640, 480, 90.0, Header(frame_id="cam"))
    assert (info.width, info.height, info.header.frame_id) == (640, 480, "cam")
    assert info.k[0] == pytest.approx(320.0) and info.k[2] == pytest.approx(319.5)
    assert info.p[0] == info.k[0] and list(info.d) == [0.0] * 5
