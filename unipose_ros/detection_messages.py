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
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from unipose_ros.message_construction import keypoint_factory, like, point, points, pose, vector3

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
    from unipose_ros.msg import KeypointClass, KeypointInstance, KeypointInstanceArray

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
    make_keypoints = keypoint_factory()
    kpts = [np.asarray(inst.keypoints, dtype=np.float64).reshape(-1, 3) for inst in instances]
    rows = np.concatenate(kpts).tolist() if kpts else []
    if positions is not None and len(positions):
        xyz = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1, 3) for p, _ in positions])
        valid = np.concatenate([np.asarray(v, dtype=bool).reshape(-1) for _, v in positions])
        # no depth at a keypoint: NaN, never a position at the camera centre
        xyz[~valid] = np.nan
        located = list(zip(points(xyz.tolist()), valid.tolist()))
    else:
        located = list(zip(points([[_NAN, _NAN, _NAN]] * len(rows)), [False] * len(rows)))
    start = 0
    for i, inst in enumerate(instances):
        x0, y0, x1, y1 = (float(v) for v in inst.box)
        n = len(kpts[i])
        names = [str(name) for name in inst.keypoint_names[:n]] + [str(k) for k in range(len(inst.keypoint_names), n)]
        keypoints = make_keypoints(names, rows[start:start + n], located[start:start + n])
        start += n
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
        u, v = float(u), float(v)
        if self.intrinsics:
            fx, fy, cx, cy = self.intrinsics
            return point((u - cx) / fx * self.depth, (v - cy) / fy * self.depth, float(self.depth))
        return point(u * self.scale, v * self.scale, 0.0)

    def project_many(self, uv) -> list[Point]:
        """Points of pixels (N, 2) (one vectorised projection, then the messages)."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        if self.intrinsics:
            fx, fy, cx, cy = self.intrinsics
            xyz = np.column_stack([(uv[:, 0] - cx) / fx * self.depth, (uv[:, 1] - cy) / fy * self.depth,
                                   np.full(len(uv), self.depth)])
        else:
            xyz = np.column_stack([uv * self.scale, np.zeros(len(uv))])
        return points(xyz.tolist())


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
    """Markers for RViz: one sphere list of every instance's keypoints (coloured by keypoint), one
    line list of every box (coloured per point by instance), and per instance a line list of its
    skeleton and a text label (coloured by instance: by track id when tracked). The first marker
    deletes everything from the previous frame; each marker also has a lifetime, so they vanish
    when the detector stops. The markers share nested messages (header, lifetime, colours):
    publish the array, do not modify it in place.

    The layout is the cheapest to publish (serialising a marker costs about as much as 25
    per-point colours): lists merged across instances where their points need a colour each
    anyway, one marker per instance where a whole list has one colour."""
    base = _marker_template(header, frame_id, lifetime_s)
    out = MarkerArray(markers=[like(base, action=Marker.DELETEALL)])
    if not instances:
        return out
    mpp = projector.metres_per_pixel
    diagonal = float(np.hypot(*image_size)) if image_size[0] else 1000.0
    sphere = max(4.0, diagonal / 120.0) * mpp
    line = max(1.5, diagonal / 500.0) * mpp
    text = max(12.0, diagonal / 45.0) * mpp
    line_scale = _scale(line, 0.0, 0.0)

    # every instance's keypoints, then per instance the label's anchor above the box and the box's
    # corners: projected at once; one Point per keypoint, shared by the spheres and the skeleton
    kpts = [np.asarray(inst.keypoints, dtype=np.float64).reshape(-1, 3) for inst in instances]
    all_kpts = np.concatenate(kpts)
    x0, y0, x1, y1 = np.array([[float(v) for v in inst.box] for inst in instances]).T
    anchors_and_corners = np.stack([x0, np.maximum(y0 - 8.0, 0.0), x0, y0, x1, y0, x1, y1, x0, y1], axis=1)
    projected = projector.project_many(np.concatenate([all_kpts[:, :2], anchors_and_corners.reshape(-1, 2)]))
    shown_all = (all_kpts[:, 2] >= min_keypoint_score).tolist()

    sphere_points, sphere_colours, box_points, box_colours, skeletons, labels = [], [], [], [], [], []
    start, extra = 0, len(all_kpts)
    for i, inst in enumerate(instances):
        colour = _rgba(instance_colour(inst, i))
        n = len(kpts[i])
        points_i, shown = projected[start:start + n], shown_all[start:start + n]
        anchor, c0, c1, c2, c3 = projected[extra + 5 * i:extra + 5 * i + 5]
        start += n
        sphere_points += [p for p, show in zip(points_i, shown) if show]
        sphere_colours += [c for c, show in zip(_keypoint_colours(n), shown) if show]
        bones = [points_i[j] for a, b in inst.skeleton if a < n and b < n and shown[a] and shown[b] for j in (a, b)]
        if bones:
            skeletons.append(like(base, ns="skeleton", id=i, type=Marker.LINE_LIST, scale=line_scale, color=colour,
                                  points=bones))
        box_points += (c0, c1, c1, c2, c2, c3, c3, c0)
        box_colours += [colour] * 8

        track = getattr(inst, "track_id", None)
        labels.append(like(base, ns="label", id=i, type=Marker.TEXT_VIEW_FACING, scale=_scale(0.0, 0.0, text),
                           color=colour, pose=_pose_at(anchor),
                           text=f"{inst.label}{f' #{track}' if track is not None and track > 0 else ''} "
                                f"{float(inst.score):.2f}"))
    out.markers += [
        # (per-point colours; the marker's own colour opaque white, never a transparent default)
        like(base, ns="keypoints", type=Marker.SPHERE_LIST, scale=_scale(sphere, sphere, sphere),
             color=_rgba((255, 255, 255)), points=sphere_points, colors=sphere_colours),
        like(base, ns="box", type=Marker.LINE_LIST, scale=line_scale, color=_rgba((255, 255, 255)),
             points=box_points, colors=box_colours)]
    out.markers += skeletons + labels
    return out


def _marker_template(header, frame_id: str, lifetime_s: float) -> Marker:
    """An ADD marker with the frame's header (a copy: the input header must stay untouched),
    identity orientation and the lifetime; markers of one array are shallow copies of it."""
    return like(_blank_marker(float(lifetime_s)),
                header=Header(stamp=header.stamp, frame_id=frame_id or header.frame_id))


@lru_cache(maxsize=8)
def _blank_marker(lifetime_s: float) -> Marker:
    # built once (Marker() builds a dozen nested messages); only ever copied, never modified
    sec = int(lifetime_s)
    marker = Marker(action=Marker.ADD, frame_locked=False,
                    lifetime=Duration(sec=sec, nanosec=int(round((lifetime_s - sec) * 1e9))))
    marker.pose.orientation.w = 1.0
    return marker


def _scale(x: float, y: float, z: float) -> Vector3:
    return vector3(float(x), float(y), float(z))


_IDENTITY = Quaternion(w=1.0)  # shared, never modified


def _pose_at(position: Point) -> Pose:
    return pose(position, _IDENTITY)


@lru_cache(maxsize=64)
def _keypoint_colours(n: int) -> tuple:
    return tuple(_rgba(_keypoint_colour(k, n)) for k in range(n))
