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

from unipose_ros.cdr import InstanceRow, MarkerSpec, keypoint_array_bytes, marker_array_bytes
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


def instance_rows(instances: Sequence, positions=None) -> list[InstanceRow]:
    """Each instance's KeypointInstance values (keypoint_array's fields): its keypoints as (K, 3)
    x, y, score, its 3-D positions (K, 3) with NaN where there is none (never a position at the
    camera centre) and their validity. `positions`: per instance (points (K, 3), valid (K,)), or
    None (no depth: every position invalid). An instance's ``track_id`` is copied (-1 when None)."""
    kpts = [np.asarray(inst.keypoints, dtype=np.float64).reshape(-1, 3) for inst in instances]
    total = sum(len(k) for k in kpts)
    if positions is not None and len(positions):
        xyz = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1, 3) for p, _ in positions])
        valid = np.concatenate([np.asarray(v, dtype=bool).reshape(-1) for _, v in positions])
        xyz[~valid] = np.nan
    else:
        xyz, valid = np.full((total, 3), np.nan), np.zeros(total, dtype=bool)
    rows, start = [], 0
    for inst, k in zip(instances, kpts):
        n = len(k)
        names = tuple(str(name) for name in inst.keypoint_names[:n]) + tuple(
            str(j) for j in range(len(inst.keypoint_names), n))
        track = getattr(inst, "track_id", None)
        rows.append(InstanceRow(str(inst.label), int(inst.class_index), float(inst.score),
                                -1 if track is None else int(track), tuple(float(v) for v in inst.box), names, k,
                                xyz[start:start + n], valid[start:start + n]))
        start += n
    return rows


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
    for row in instance_rows(instances, positions):
        located = zip(points(row.positions.tolist()), row.valid.tolist())
        x0, y0, x1, y1 = row.box
        out.instances.append(KeypointInstance(
            label=row.label, class_index=row.class_index, score=row.score, track_id=row.track_id,
            x_min=x0, y_min=y0, x_max=x1, y_max=y1,
            keypoints=make_keypoints(row.names, row.keypoints.tolist(), located)))
    return out


def keypoint_array_serialised(instances: Sequence, header, image_size: tuple[int, int], prompt: ActivePrompt,
                              model: str = "", inference_time: float = 0.0, positions=None,
                              position_frame_id: str = "") -> bytes:
    """keypoint_array(...), serialised (the bytes a publisher or a bag writer takes; unipose_ros.cdr)."""
    return keypoint_array_bytes(instance_rows(instances, positions), header, image_size, prompt.classes,
                                prompt.text, model, float(inference_time),
                                position_frame_id if positions is not None else "")


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

    def project_array(self, uv) -> np.ndarray:
        """Positions (N, 3) of pixels (N, 2), vectorised."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        if self.intrinsics:
            fx, fy, cx, cy = self.intrinsics
            return np.column_stack([(uv[:, 0] - cx) / fx * self.depth, (uv[:, 1] - cy) / fy * self.depth,
                                    np.full(len(uv), self.depth)])
        return np.column_stack([uv * self.scale, np.zeros(len(uv))])


def instance_rgba(inst, index: int) -> tuple[float, float, float, float]:
    """instance_colour as a marker colour (r, g, b, a in [0, 1])."""
    return _rgba_of(instance_colour(inst, index))


@lru_cache(maxsize=1024)
def _rgba_of(rgb: tuple[int, int, int], alpha: float = 1.0) -> tuple[float, float, float, float]:
    return (rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0, float(alpha))


WHITE = (1.0, 1.0, 1.0, 1.0)


@lru_cache(maxsize=1024)
def _colour_message(rgba: tuple) -> ColorRGBA:
    # shared, never modified: a message may reference the same colour many times
    return ColorRGBA(r=rgba[0], g=rgba[1], b=rgba[2], a=rgba[3])


@lru_cache(maxsize=64)
def _keypoint_colours(n: int) -> np.ndarray:
    """(n, 4) colours of a class's keypoints, by index (read-only, shared)."""
    out = np.empty((n, 4))
    for k in range(n):
        r, g, b = colorsys.hsv_to_rgb(k / max(n, 1), 0.85, 1.0)
        out[k] = _rgba_of((int(r * 255), int(g * 255), int(b * 255)))
    out.flags.writeable = False
    return out


def bone_indices(skeleton, valid: list) -> np.ndarray:
    """Endpoints, in order, of the skeleton links whose two keypoints are both `valid` (a list of
    bools, one per keypoint): the index pairs of a LINE_LIST, flattened."""
    n = len(valid)
    return np.asarray([j for a, b in skeleton if a < n and b < n and valid[a] and valid[b] for j in (a, b)],
                      dtype=np.intp)


_BOX_CORNERS = np.array([1, 2, 2, 3, 3, 4, 4, 1])  # in each instance's (anchor, 4 corners) block


def marker_specs(instances: Sequence, projector: PixelProjector, image_size: tuple[int, int],
                 min_keypoint_score: float = 0.0) -> list[MarkerSpec]:
    """The markers of marker_array, as specs (one layout for the message objects and the bytes)."""
    specs = [MarkerSpec(action=Marker.DELETEALL)]
    if not instances:
        return specs
    mpp = projector.metres_per_pixel
    diagonal = float(np.hypot(*image_size)) if image_size[0] else 1000.0
    sphere = max(4.0, diagonal / 120.0) * mpp
    line = max(1.5, diagonal / 500.0) * mpp
    text = max(12.0, diagonal / 45.0) * mpp

    # every instance's keypoints, then per instance the label's anchor above the box and the box's
    # corners: projected at once
    kpts = [np.asarray(inst.keypoints, dtype=np.float64).reshape(-1, 3) for inst in instances]
    all_kpts = np.concatenate(kpts)
    x0, y0, x1, y1 = np.array([[float(v) for v in inst.box] for inst in instances]).T
    anchors_and_corners = np.stack([x0, np.maximum(y0 - 8.0, 0.0), x0, y0, x1, y0, x1, y1, x0, y1], axis=1)
    xyz = projector.project_array(np.concatenate([all_kpts[:, :2], anchors_and_corners.reshape(-1, 2)]))
    shown_all = all_kpts[:, 2] >= min_keypoint_score

    sphere_idx, sphere_colours, box_colours, skeletons, labels = [], [], [], [], []
    start, extra = 0, len(all_kpts)
    for i, inst in enumerate(instances):
        colour = instance_rgba(inst, i)
        n = len(kpts[i])
        shown = shown_all[start:start + n]
        sphere_idx.append(start + np.flatnonzero(shown))
        sphere_colours.append(_keypoint_colours(n)[shown])
        bones = bone_indices(inst.skeleton, shown.tolist())
        if len(bones):
            skeletons.append(MarkerSpec("skeleton", i, Marker.LINE_LIST, Marker.ADD, scale=(line, 0.0, 0.0),
                                        color=colour, points=xyz[start + bones]))
        box_colours.append(colour)
        track = getattr(inst, "track_id", None)
        labels.append(MarkerSpec("label", i, Marker.TEXT_VIEW_FACING, Marker.ADD,
                                 position=tuple(xyz[extra + 5 * i].tolist()), scale=(0.0, 0.0, text), color=colour,
                                 text=f"{inst.label}{f' #{track}' if track is not None and track > 0 else ''} "
                                      f"{float(inst.score):.2f}"))
        start += n
    box_idx = extra + (5 * np.arange(len(instances)))[:, None] + _BOX_CORNERS
    return specs + [
        # (per-point colours; the marker's own colour opaque white, never a transparent default)
        MarkerSpec("keypoints", 0, Marker.SPHERE_LIST, Marker.ADD, scale=(sphere, sphere, sphere), color=WHITE,
                   points=xyz[np.concatenate(sphere_idx)], colors=np.concatenate(sphere_colours)),
        MarkerSpec("box", 0, Marker.LINE_LIST, Marker.ADD, scale=(line, 0.0, 0.0), color=WHITE,
                   points=xyz[box_idx.ravel()], colors=np.repeat(np.asarray(box_colours), 8, axis=0)),
    ] + skeletons + labels


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
    return markers_from_specs(marker_specs(instances, projector, image_size, min_keypoint_score), header,
                              frame_id, lifetime_s)


def marker_array_serialised(instances: Sequence, header, projector: PixelProjector, image_size: tuple[int, int],
                            lifetime_s: float = 0.5, frame_id: str = "", min_keypoint_score: float = 0.0) -> bytes:
    """marker_array(...), serialised (unipose_ros.cdr)."""
    return marker_array_bytes(marker_specs(instances, projector, image_size, min_keypoint_score), header,
                              frame_id, lifetime_parts(lifetime_s))


def markers_from_specs(specs: Sequence[MarkerSpec], header, frame_id: str = "", lifetime_s: float = 0.5):
    """A MarkerArray of specs: each marker a shallow copy of one template (the frame's header,
    identity orientation, the lifetime) with the spec's fields."""
    base = _marker_template(header, frame_id, lifetime_s)
    out = MarkerArray()
    for spec in specs:
        fields = {"ns": spec.ns, "id": spec.id, "type": spec.type, "action": spec.action}
        if any(spec.position):
            fields["pose"] = _pose_at(point(*spec.position))
        if any(spec.scale):
            fields["scale"] = _scale(*spec.scale)
        if any(spec.color):
            fields["color"] = _colour_message(spec.color)
        if spec.points is not None and len(spec.points):
            fields["points"] = points(spec.points.tolist())
        if spec.colors is not None and len(spec.colors):
            fields["colors"] = [_colour_message(tuple(c)) for c in spec.colors.tolist()]
        if spec.text:
            fields["text"] = spec.text
        out.markers.append(like(base, **fields))
    return out


def lifetime_parts(lifetime_s: float) -> tuple[int, int]:
    """(sec, nanosec) of a marker lifetime in seconds."""
    sec = int(lifetime_s)
    return sec, int(round((lifetime_s - sec) * 1e9))


def _marker_template(header, frame_id: str, lifetime_s: float) -> Marker:
    """An ADD marker with the frame's header (a copy: the input header must stay untouched),
    identity orientation and the lifetime; markers of one array are shallow copies of it."""
    return like(_blank_marker(float(lifetime_s)),
                header=Header(stamp=header.stamp, frame_id=frame_id or header.frame_id))


@lru_cache(maxsize=8)
def _blank_marker(lifetime_s: float) -> Marker:
    # built once (Marker() builds a dozen nested messages); only ever copied, never modified
    sec, nanosec = lifetime_parts(lifetime_s)
    marker = Marker(action=Marker.ADD, frame_locked=False, lifetime=Duration(sec=sec, nanosec=nanosec))
    marker.pose.orientation.w = 1.0
    return marker


def _scale(x: float, y: float, z: float) -> Vector3:
    return vector3(float(x), float(y), float(z))


_IDENTITY = Quaternion(w=1.0)  # shared, never modified


def _pose_at(position: Point) -> Pose:
    return pose(position, _IDENTITY)
