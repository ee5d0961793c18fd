"""Detections (unipose_model Instances) -> unipose_ros/KeypointInstanceArray and RViz markers.

Pure functions of their inputs (no node, no DDS), so they are tested on their own and shared by
the live node and the bag processor: both produce byte-identical keypoint messages.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

# Colours as in unipose_model.visualize (kept local so this module stays light to import).
_PALETTE_RGB = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
]


@dataclass(frozen=True)
class ClassLayout:
    """One prompt class: its name, requested keypoints and skeleton (index pairs)."""

    name: str
    keypoint_names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class ActivePrompt:
    """The prompt in force: its text (canonical for a text prompt, a description for a visual
    one), its layout, and the predictor's prepared form of it (features encoded once)."""

    text: str
    classes: tuple[ClassLayout, ...]
    prepared: object = None

    @classmethod
    def from_prepared(cls, text: str, prepared) -> "ActivePrompt":
        """From unipose_model.predictor.PreparedPrompt (classes + keypoint groups)."""
        layouts = []
        for index, name in enumerate(prepared.classes):
            group = next((g for g in prepared.groups if index in g.class_indices), None)
            names = tuple(group.keypoint_names) if group else ()
            skeleton = tuple((int(a), int(b)) for a, b in group.skeleton) if group else ()
            layouts.append(ClassLayout(str(name), names, skeleton))
        return cls(text, tuple(layouts), prepared)

    def run(self, predictor, image, color: str):
        """Detections of this prompt in `image` (the prepared features when there are some)."""
        return predictor.predict(image, self.prepared if self.prepared is not None else self.text, color=color)


def keypoint_array(instances: Sequence, header, image_size: tuple[int, int], prompt: ActivePrompt,
                   model: str = "", inference_time: float = 0.0, positions=None, position_frame_id: str = ""):
    """A KeypointInstanceArray for one image. `image_size` is (width, height). `positions`: per
    instance (points (K, 3), valid (K,)) in `position_frame_id` (depth_3d.instance_positions), or
    None (no depth: every position invalid). An instance's ``track_id`` is copied (-1 when None)."""
    from unipose_ros.msg import Keypoint, KeypointClass, KeypointInstance, KeypointInstanceArray

    out = KeypointInstanceArray()
    out.header = header
    out.image_width, out.image_height = int(image_size[0]), int(image_size[1])
    out.prompt = prompt.text
    out.model = model
    out.inference_time = float(inference_time)
    out.position_frame_id = position_frame_id if positions is not None else ""
    out.classes = [KeypointClass(name=c.name, keypoint_names=list(c.keypoint_names),
                                 skeleton=[int(i) for pair in c.skeleton for i in pair])
                   for c in prompt.classes]
    for i, inst in enumerate(instances):
        x0, y0, x1, y1 = (float(v) for v in inst.box)
        kpts = np.asarray(inst.keypoints, dtype=np.float64).reshape(-1, 3)
        names = list(inst.keypoint_names)
        points, valid = positions[i] if positions is not None else (None, None)
        keypoints = []
        for k, (x, y, s) in enumerate(kpts):
            kp = Keypoint(name=str(names[k]) if k < len(names) else str(k), index=k,
                          x=float(x), y=float(y), score=float(s))
            if valid is not None and valid[k]:
                kp.position.x, kp.position.y, kp.position.z = (float(v) for v in points[k])
                kp.position_valid = True
            else:  # no depth here: NaN, never a position at the camera centre
                kp.position.x = kp.position.y = kp.position.z = _NAN
            keypoints.append(kp)
        track = getattr(inst, "track_id", None)
        out.instances.append(KeypointInstance(
            label=str(inst.label), class_index=int(inst.class_index), score=float(inst.score),
            track_id=-1 if track is None else int(track),
            x_min=x0, y_min=y0, x_max=x1, y_max=y1, keypoints=keypoints))
    return out


_NAN = float("nan")


def instance_colour(inst, index: int) -> tuple[int, int, int]:
    """Marker colour: by track id when the instance has one (stable across frames), else by index."""
    track = getattr(inst, "track_id", None)
    key = track - 1 if track is not None and track > 0 else index
    return _PALETTE_RGB[key % len(_PALETTE_RGB)]


# ------------------------------------------------------------------------------------ markers
@dataclass(frozen=True)
class PixelProjector:
    """Places image pixels in 3-D for RViz.

    With camera intrinsics (fx, fy, cx, cy), a pixel goes on its viewing ray at `depth` metres in
    the camera's optical frame (x right, y down, z forward). Without them, pixels lie in the
    plane z = 0 of the image frame, `scale` metres per pixel, origin at the top-left corner.
    """

    depth: float = 2.0
    scale: float = 0.002
    intrinsics: tuple[float, float, float, float] | None = None

    @classmethod
    def from_camera_info(cls, camera_info, depth: float, scale: float) -> "PixelProjector":
        k = list(camera_info.k) if camera_info is not None else []
        if len(k) == 9 and k[0] > 0 and k[4] > 0:
            return cls(depth, scale, (float(k[0]), float(k[4]), float(k[2]), float(k[5])))
        return cls(depth, scale, None)

    @property
    def metres_per_pixel(self) -> float:
        return self.depth / self.intrinsics[0] if self.intrinsics else self.scale

    def project(self, u: float, v: float) -> Point:
        if self.intrinsics:
            fx, fy, cx, cy = self.intrinsics
            return Point(x=(u - cx) / fx * self.depth, y=(v - cy) / fy * self.depth, z=self.depth)
        return Point(x=u * self.scale, y=v * self.scale, z=0.0)


@lru_cache(maxsize=1024)
def _rgba(rgb: tuple[int, int, int], alpha: float = 1.0) -> ColorRGBA:
    # shared, never modified: a message may reference the same colour many times
    return ColorRGBA(r=rgb[0] / 255.0, g=rgb[1] / 255.0, b=rgb[2] / 255.0, a=float(alpha))


@lru_cache(maxsize=1024)
def _keypoint_colour(k: int, n: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(k / max(n, 1), 0.85, 1.0)
    return (int(r * 255), int(g * 255), int(b * 255))


def marker_array(instances: Sequence, header, projector: PixelProjector, image_size: tuple[int, int],
                 lifetime_s: float = 0.5, frame_id: str = "", min_keypoint_score: float = 0.0):
    """Markers for RViz: per instance a sphere list (keypoints), a line list (skeleton), a line
    strip (box) and a text label. The first marker deletes everything from the previous frame;
    each marker also has a lifetime, so they vanish when the detector stops."""
    # a copy: message fields hold references, and the input header must stay untouched
    marker_header = Header(stamp=header.stamp, frame_id=frame_id or header.frame_id)
    out = MarkerArray()
    clear = Marker(action=Marker.DELETEALL)
    clear.header = marker_header
    out.markers.append(clear)
    mpp = projector.metres_per_pixel
    diagonal = float(np.hypot(*image_size)) if image_size[0] else 1000.0
    sphere = max(4.0, diagonal / 120.0) * mpp
    line = max(1.5, diagonal / 500.0) * mpp
    text = max(12.0, diagonal / 45.0) * mpp
    sec = int(lifetime_s)
    lifetime = Duration(sec=sec, nanosec=int(round((lifetime_s - sec) * 1e9)))

    def new_marker(ns: str, ident: int, kind: int, rgb, scale: float):
        m = Marker(ns=ns, id=ident, type=kind, action=Marker.ADD, lifetime=lifetime,
                   frame_locked=False)
        m.header = marker_header
        m.pose.orientation.w = 1.0
        m.scale.x = m.scale.y = m.scale.z = scale
        m.color = _rgba(rgb)
        return m

    for i, inst in enumerate(instances):
        colour = instance_colour(inst, i)
        kpts = np.asarray(inst.keypoints, dtype=np.float64).reshape(-1, 3)
        shown = kpts[:, 2] >= min_keypoint_score

        # one Point per keypoint, shared by the spheres and the skeleton lines
        points = [projector.project(float(x), float(y)) for x, y in kpts[:, :2]]
        n = len(points)
        spheres = new_marker("keypoints", i, Marker.SPHERE_LIST, colour, sphere)
        spheres.points = [points[k] for k in range(n) if shown[k]]
        spheres.colors = [_rgba(_keypoint_colour(k, n)) for k in range(n) if shown[k]]
        out.markers.append(spheres)

        bones = new_marker("skeleton", i, Marker.LINE_LIST, colour, line)
        bones.scale.y = bones.scale.z = 0.0
        bones.points = [points[j] for a, b in inst.skeleton
                        if a < n and b < n and shown[a] and shown[b] for j in (a, b)]
        out.markers.append(bones)

        x0, y0, x1, y1 = (float(v) for v in inst.box)
        box = new_marker("box", i, Marker.LINE_STRIP, colour, line)
        box.scale.y = box.scale.z = 0.0
        box.points = [projector.project(x, y) for x, y in
                      ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))]
        out.markers.append(box)

        label = new_marker("label", i, Marker.TEXT_VIEW_FACING, colour, text)
        label.scale.x = label.scale.y = 0.0
        track = getattr(inst, "track_id", None)
        label.text = f"{inst.label}{f' #{track}' if track is not None and track > 0 else ''} {float(inst.score):.2f}"
        anchor = projector.project(x0, max(y0 - 8.0, 0.0))
        label.pose.position = anchor
        out.markers.append(label)
    return out
