"""Cheap construction of the many small messages a frame needs (points, keypoints, markers).

The generated Python constructors of ROS 2 messages build every nested field with its default
and then set each field through a property (Point(x=, y=, z=) ~1.5 us, Marker() ~20-30 us, most
of it the CompressedImage, MeshFile and Pose it holds). A frame of 5 people has ~300 points and
~85 keypoints, so the node builds them by setting the fields' slots directly, which is 5-7 times
cheaper and gives equal messages (test/ros/test_message_construction.py compares them with the
constructors' output). That relies on the layout rosidl_generator_py has generated since Dashing
(one slot `_<field>` per field, plus `_check_fields`); a class with another layout, or field
checks switched on (ROS_PYTHON_CHECK_FIELDS=1), gets the ordinary constructor.
"""
from __future__ import annotations

from functools import lru_cache

from geometry_msgs.msg import Point, Pose, Vector3


def _direct_slots(cls) -> bool:
    """Whether instances of `cls` may be built by setting their slots: the generated layout and
    no field checks requested."""
    fields = list(cls.get_fields_and_field_types())
    return list(getattr(cls, "__slots__", ())) == [f"_{f}" for f in fields] + ["_check_fields"] \
        and not cls()._check_fields


DIRECT = _direct_slots(Point) and _direct_slots(Vector3) and _direct_slots(Pose)

if DIRECT:
    _new = object.__new__

    def point(x: float, y: float, z: float) -> Point:
        """geometry_msgs/Point(x=x, y=y, z=z); the values must be Python floats."""
        p = _new(Point)
        p._x, p._y, p._z, p._check_fields = x, y, z, False
        return p

    def vector3(x: float, y: float, z: float) -> Vector3:
        v = _new(Vector3)
        v._x, v._y, v._z, v._check_fields = x, y, z, False
        return v

    def pose(position: Point, orientation) -> Pose:
        p = _new(Pose)
        p._position, p._orientation, p._check_fields = position, orientation, False
        return p
else:  # pragma: no cover - another rosidl layout or checks on
    def point(x: float, y: float, z: float) -> Point:
        return Point(x=x, y=y, z=z)

    def vector3(x: float, y: float, z: float) -> Vector3:
        return Vector3(x=x, y=y, z=z)

    def pose(position: Point, orientation) -> Pose:
        return Pose(position=position, orientation=orientation)


if DIRECT:
    def points(xyz) -> list:
        """Points from rows of (x, y, z) Python floats (e.g. an (N, 3) array's tolist())."""
        out = []
        append = out.append
        for x, y, z in xyz:  # point() inlined: a frame has hundreds
            p = _new(Point)
            p._x = x
            p._y = y
            p._z = z
            p._check_fields = False
            append(p)
        return out
else:  # pragma: no cover
    def points(xyz) -> list:
        return [point(x, y, z) for x, y, z in xyz]


@lru_cache(maxsize=1)
def keypoint_factory():
    """A function (names, rows, positions) -> [unipose_ros/Keypoint]: `names` per keypoint, `rows`
    its (x, y, score) Python floats, `positions` its Point (a NaN one where there is no valid
    position) and validity pairs. Built on first use: the message classes load only when a
    keypoint message is made."""
    from unipose_ros.msg import Keypoint

    if not _direct_slots(Keypoint):  # pragma: no cover
        return lambda names, rows, positions: [
            Keypoint(name=name, index=k, x=x, y=y, score=s, position=p, position_valid=ok)
            for k, (name, (x, y, s), (p, ok)) in enumerate(zip(names, rows, positions))]

    def keypoints(names, rows, positions) -> list:
        out = []
        append = out.append
        for k, (name, (x, y, s), (p, ok)) in enumerate(zip(names, rows, positions)):
            kp = _new(Keypoint)
            kp._name = name
            kp._index = k
            kp._x = x
            kp._y = y
            kp._score = s
            kp._position = p
            kp._position_valid = ok
            kp._check_fields = False
            append(kp)
        return out

    return keypoints


def like(template, **fields):
    """A shallow copy of a message with some fields replaced: the copy shares the template's other
    nested messages (header, lifetime, ...), so neither may be modified in place afterwards.
    (copy.copy would go through every field's property; the slots are copied directly.)"""
    clone, direct = _cloner(type(template))
    out = clone(template)
    if direct:
        for name, value in fields.items():
            setattr(out, "_" + name, value)
    else:  # pragma: no cover
        for name, value in fields.items():
            setattr(out, name, value)
    return out


@lru_cache(maxsize=None)
def _cloner(cls):
    """(a function copying a `cls` message slot by slot, whether fields may be set by slot).
    The function is generated, as dataclasses does, so each slot is one plain attribute copy."""
    if not _direct_slots(cls):  # pragma: no cover - another layout: the standard shallow copy
        import copy

        return copy.copy, False
    body = "".join(f"    out.{slot} = template.{slot}\n" for slot in cls.__slots__)
    namespace = {"new": object.__new__, "cls": cls}
    exec(f"def clone(template):\n    out = new(cls)\n{body}    return out\n", namespace)  # noqa: S102
    return namespace["clone"], True
