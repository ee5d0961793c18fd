"""Colour/depth pairing by stamp (unipose_ros/depth_pairing.py): ApproximateTime's rule for two
topics, unpaired frames counted, and the 3-D keypoints of a depth Image message."""
import sys
import threading
import time

import numpy as np
import pytest

from unipose_model.depth import DepthError
from unipose_ros.depth_pairing import StampPairer

MS = 1_000_000


def test_nearest_depth_within_tolerance_is_paired_once():
    p = StampPairer(tolerance=0.02, wait=0.0)
    for t in (0, 33, 66, 100):
        p.add(t * MS, f"d{t}")
    assert p.pair(70 * MS) == "d66" and p.last_offset_s == pytest.approx(-0.004)
    assert p.pair(64 * MS) is None           # d66 was used, d33 dropped with it: nothing within 20 ms
    assert p.pair(95 * MS) == "d100"
    assert (p.paired, p.unpaired) == (2, 1)


def test_a_stamp_mismatch_beyond_the_tolerance_is_not_used_and_counted():
    p = StampPairer(tolerance=0.01, wait=0.0)
    p.add(100 * MS, "depth")
    assert p.pair(115 * MS) is None and p.unpaired == 1
    p.set_tolerance(0.02)
    assert p.pair(115 * MS) == "depth" and p.paired == 1


def test_waits_briefly_for_a_depth_frame_that_is_still_coming():
    p = StampPairer(tolerance=0.02, wait=2.0)
    p.add(90 * MS, "early")
    threading.Timer(0.1, p.add, args=(101 * MS, "late")).start()
    t0 = time.monotonic()
    assert p.pair(100 * MS) == "late"        # nearer than "early", arrived after the colour frame
    assert time.monotonic() - t0 < 1.5
    # nothing newer comes: the wait ends and the best buffered frame is used
    q = StampPairer(tolerance=0.02, wait=0.05)
    q.add(90 * MS, "only")
    assert q.pair(100 * MS) == "only"


def test_depth_message_to_metres_and_positions():
    from sensor_msgs.msg import CameraInfo, Image

    from unipose_ros.depth_3d import camera_from_info, depth_image_to_metres

    depth = np.full((4, 6), 1500, np.uint16)
    depth[0, 0] = 0
    msg = Image(height=4, width=6, encoding="16UC1", is_bigendian=0, step=16)  # 4 bytes of row padding
    rows = np.zeros((4, 16), np.uint8)
    rows[:, :12] = depth.view(np.uint8).reshape(4, 12)
    msg.data = rows.tobytes()
    m = depth_image_to_metres(msg)
    assert m.shape == (4, 6) and np.isnan(m[0, 0]) and m[1, 1] == pytest.approx(1.5)
    big = Image(height=1, width=2, encoding="32FC1", is_bigendian=1, step=8,
                data=np.array([2.5, 0.0], ">f4").tobytes())
    assert depth_image_to_metres(big)[0, 0] == pytest.approx(2.5) and np.isnan(depth_image_to_metres(big)[0, 1])
    # an unpadded image in this machine's byte order is read in place, not copied every frame
    from unipose_ros.depth_3d import depth_image_array

    native = Image(height=4, width=6, encoding="16UC1", is_bigendian=int(sys.byteorder == "big"), step=12,
                   data=depth.tobytes())
    raw, encoding = depth_image_array(native)
    assert encoding == "16UC1" and np.array_equal(raw, depth)
    assert np.shares_memory(raw, np.frombuffer(native.data, np.uint8))
    with pytest.raises(DepthError, match="encoding 'rgb8'"):
        depth_image_to_metres(Image(height=1, width=1, encoding="rgb8", step=3, data=b"\0\0\0"))
    with pytest.raises(DepthError, match="CameraInfo"):
        camera_from_info(None)
    with pytest.raises(DepthError, match="fx > 0"):
        camera_from_info(CameraInfo())


def test_no_wait_when_depth_is_not_streaming():
    p = StampPairer(tolerance=0.02, wait=5.0)
    t0 = time.monotonic()
    assert p.pair(100 * MS) is None and time.monotonic() - t0 < 1.0  # nothing ever arrived
    assert p.unpaired == 1
