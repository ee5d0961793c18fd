"""Whether the ROS tests can run here (imported by conftest.py before any ROS module)."""


def ros_missing() -> str | None:
    """Why rclpy or the built unipose_ros messages do not import; None when both do."""
    try:
        import rclpy  # noqa: F401
        import unipose_ros.msg  # noqa: F401
    except Exception as e:  # a missing shared library is not always an ImportError
        return f"{type(e).__name__}: {e}"
    return None
