"""A 60 Hz camera for 20 s: no backlog (flat latency), drops counted, no memory growth."""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import cv2
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image

from rostest_support import CAMERA, DETECTOR, TEST_MODEL_PARAMS, load_bgr, sample_images
from unipose_ros.image_conversion import array_to_image
from unipose_ros.msg import KeypointInstanceArray

RATE_HZ, DURATION_S, WARMUP_S = 60.0, 20.0, 5.0


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def test_flood_60hz_no_backlog_drops_counted_memory_flat(probe, start_node):
    node = start_node(DETECTOR, {**TEST_MODEL_PARAMS, "diagnostics_period": 0.5}, {"image": CAMERA})
    camera = probe.node.create_publisher(Image, CAMERA, 10)
    arrays = probe.subscribe(KeypointInstanceArray, "/unipose/keypoints")
    probe.subscribe(DiagnosticArray, "/diagnostics")
    frame = cv2.resize(load_bgr(sample_images(1)[0]), (640, 480))
    template = array_to_image(frame, "bgr8")
    clock = probe.node.get_clock()

    def publish_one():
        msg = Image(height=template.height, width=template.width, encoding="bgr8", step=template.step,
                    data=template.data)
        msg.header.stamp = clock.now().to_msg()
        msg.header.frame_id = "camera"
        camera.publish(msg)

    # warm up: until the first result arrives (model loaded, discovery done)
    probe.wait_for_subscriber(camera, 120, node=node)
    probe.wait_until(lambda: (publish_one(), arrays)[1], 120, "the first keypoints", node=node)

    published, start = 0, time.monotonic()
    rss_after_warmup = None
    while (elapsed := time.monotonic() - start) < DURATION_S:
        publish_one()
        published += 1
        if rss_after_warmup is None and elapsed >= WARMUP_S:
            rss_after_warmup = rss_bytes(node.pid)
        time.sleep(max(0.0, start + published / RATE_HZ - time.monotonic()))  # pace the camera
    rss_end = rss_bytes(node.pid)
    flood_end = time.time()

    # stamp -> arrival latency of the processed frames after warm-up (stamps are wall-clock time)
    wall_offset = time.time() - time.monotonic()
    latencies = [arrival + wall_offset - (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9)
                 for arrival, m in list(arrays) if arrival - start >= WARMUP_S]
    assert len(latencies) >= 6, f"only {len(latencies)} frames processed after warm-up\n{node.log()[-3000:]}"
    third = len(latencies) // 3
    early, late = statistics.median(latencies[:third]), statistics.median(latencies[-third:])
    processed_rate = len(latencies) / (DURATION_S - WARMUP_S)

    # every frame the node received is either processed or counted as dropped (best-effort
    # transport may lose frames before the node sees them: that is not the node's count)
    def accounted(m):
        v = {kv.key: kv.value for kv in m.status[0].values} if m.status else {}
        return v and int(v["frames_received"]) - int(v["frames_processed"]) - int(v["frames_dropped"]) <= 2 \
            and int(v["frames_received"]) > 0 and m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 >= flood_end
    diag = probe.wait_for_message("/diagnostics", accounted, timeout=30, node=node)
    values = {kv.key: kv.value for kv in diag.status[0].values}
    print(f"\nflood: published {published} at {RATE_HZ:.0f} Hz, processed {len(arrays)} "
          f"({processed_rate:.1f} Hz after warm-up), diagnostics {values}, latency early {early*1e3:.0f} ms "
          f"late {late*1e3:.0f} ms, RSS {rss_after_warmup/2**20:.0f} -> {rss_end/2**20:.0f} MiB")

    assert published >= RATE_HZ * DURATION_S * 0.9
    assert int(values["frames_dropped"]) > 0
    assert int(values["frames_processed"]) >= len(arrays) - 1
    # no backlog: late frames wait no longer than early ones (allowing a model-time of jitter)
    model_s = float(values["model_time_ms"]) / 1e3
    assert late <= early + max(2 * model_s, 0.25), (early, late, model_s)
    assert late < 1.0 + 3 * model_s
    assert rss_end <= rss_after_warmup * 1.05, (rss_after_warmup, rss_end)
    assert node.alive()
