"""The `unipose` detector node: camera images + prompts in; keypoints, markers, overlays out.

A managed (lifecycle) node:
  configure   loads the model, creates publishers and the prompt subscriptions, sets the prompt
  activate    subscribes to the images and starts the inference worker
  deactivate  unsubscribes and stops the worker; the model stays loaded
  cleanup     frees the model
With `autostart` (the default) it configures and activates itself, so `ros2 run` just works.

Processing never builds a backlog: the image callback only drops the message into a one-frame
slot; one worker thread takes the newest frame, converts it, runs the model and publishes. Frames
that arrive meanwhile replace the waiting one and are counted as dropped.
"""
from __future__ import annotations

import gc
import threading
import time
import traceback

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)
from rcl_interfaces.msg import SetParametersResult
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from unipose_model.prompt import quote_for_message
from unipose_ros import cdr
from unipose_ros.depth_3d import marker_array_3d, marker_array_3d_serialised
from unipose_ros.detection_messages import (ActivePrompt, PixelProjector, keypoint_array, keypoint_array_serialised,
                                            marker_array, marker_array_serialised)
from unipose_ros.frame_slot import LatestFrameSlot
from unipose_ros.model_loader import (check_prompt_fields, load_predictor, model_label, resolve_prompt,
                                      resolve_visual_prompt, settings_from_parameters,
                                      visual_prompt_from_fields, visual_prompt_from_parameters)
from unipose_ros.image_conversion import (ImageConversionError, array_to_image,
                                          compressed_to_color, image_to_color)
from unipose_ros.msg import KeypointInstanceArray, VisualPrompt
from unipose_ros.srv import CaptureVisualPrompt
from unipose_ros.parameters import DETECTOR_PARAMETERS, check_choice, descriptor
from unipose_ros.stats import ProblemThrottle, RateLimiter, WindowStats
from unipose_ros.tracks_and_depth import TracksAndDepth

NODE_NAME = "unipose"
REJECTED_PREFIX = "error: "  # ~/active_prompt: a rejection starts with this, a prompt never does
# parameters that make the predictor's settings (model_loader.settings_from_parameters + the profile)
SETTINGS_PARAMETERS = {"box_threshold", "iou_threshold", "max_instances", "short_side", "max_size", "refine",
                       "speed_profile"}


def image_qos(kind: str, depth: int) -> QoSProfile:
    if kind == "sensor_data":
        qos = QoSProfile(**{k: getattr(qos_profile_sensor_data, k)
                            for k in ("history", "reliability", "durability")}, depth=depth)
        return qos
    reliability = ReliabilityPolicy.RELIABLE if kind == "reliable" else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability,
                      durability=DurabilityPolicy.VOLATILE)


LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


class DetectorNode(LifecycleNode):
    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for param in DETECTOR_PARAMETERS:
            self.declare_parameter(param.name, param.default, descriptor(param))
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self.predictor = None
        self.prompt: ActivePrompt | None = None  # replaced whole: a frame sees one prompt
        self._prompt_lock = threading.Lock()
        self._slot = LatestFrameSlot()
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._camera_info: CameraInfo | None = None
        self._limiter = RateLimiter()
        self._throttle = ProblemThrottle(period_s=5.0)
        self._input = WindowStats()
        self._processed = WindowStats()      # value: stamp -> publish latency, s
        self._model_time = WindowStats()
        self._bad_frames = 0
        self._last_error = ""
        self._last_error_time = -1e9
        self._syncing_prompt = False
        self._configure_error = ""  # why the last configure failed (ERROR on /diagnostics)
        self._image_sub = None
        self._info_sub = None
        self._depth_sub = None
        self._extras = TracksAndDepth()  # track ids and 3-D positions
        self._pubs: dict = {}
        self._serialised = False         # set in on_configure (unipose_ros.cdr.matches_rclpy)
        self._prompt_subs: list = []
        self._capture_srv = None
        self._last_frame = None  # (image, channel order, header) of the newest converted frame
        self._image_group = MutuallyExclusiveCallbackGroup()
        self._control_group = MutuallyExclusiveCallbackGroup()
        # /diagnostics from start-up, not from configure: a model that fails to load is an ERROR
        # status there, not silence
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics",
                                               QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self._diag_timer = None
        self._start_diagnostics(float(self._param("diagnostics_period")))

    # ------------------------------------------------------------------ parameters
    def _param(self, name: str):
        return self.get_parameter(name).value

    def _params(self) -> dict:
        return {p.name: self._param(p.name) for p in DETECTOR_PARAMETERS}

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        for param in params:
            reason = check_choice(param.name, param.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        predictor = self.predictor
        for param in params:
            if param.name == "prompt" and predictor is not None and not self._syncing_prompt:
                ok, reason = self._apply_prompt(param.value, source="parameter")
                if not ok:
                    return SetParametersResult(successful=False, reason=reason)
        changed = {p.name: p.value for p in params}
        if predictor is not None and changed.keys() & SETTINGS_PARAMETERS:
            try:
                self._apply_settings(predictor, changed)
            except ValueError as exc:  # a combination the predictor cannot run: refused, nothing changed
                return SetParametersResult(successful=False, reason=str(exc))
        if any(p.name == "tracking" for p in params):
            self._extras.reset_tracks()
        if any(p.name == "depth_tolerance" for p in params):
            self._extras.depth.set_tolerance(float(next(p.value for p in params if p.name == "depth_tolerance")))
        if any(p.name == "max_rate" for p in params):
            self._limiter.max_rate = float(next(p.value for p in params if p.name == "max_rate"))
        return SetParametersResult(successful=True)

    def _apply_settings(self, predictor, changed: dict | None = None) -> None:
        """The parameters as the predictor's settings, scaled by the speed profile: one assignment
        (model_loader.settings_from_parameters; `changed`: values not yet stored)."""
        from unipose_model.speed import apply_profile

        params = self._params()
        params.update(changed or {})
        profile = apply_profile(predictor, params["speed_profile"], base=settings_from_parameters(params))
        s = predictor.settings
        self.get_logger().info(f"speed profile {profile.describe()}: input short side {s.short_side}, "
                               f"max {s.max_size}, box threshold {s.box_threshold:g}, "
                               f"crop refinement {s.refine or 'off'}, heatmap refiner "
                               f"{'on' if predictor.heatmap_refiner is not None else 'off'}")

    # ------------------------------------------------------------------ lifecycle
    def _start_diagnostics(self, period: float) -> None:
        if self._diag_timer is not None:
            if abs(self._diag_timer.timer_period_ns * 1e-9 - period) < 1e-9:
                return
            self.destroy_timer(self._diag_timer)
        self._diag_timer = self.create_timer(period, self._publish_diagnostics, callback_group=self._control_group)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        params = self._params()
        self._start_diagnostics(float(params["diagnostics_period"]))
        for name in ("backend", "precision", "image_qos", "speed_profile", "refine"):
            reason = check_choice(name, params[name])
            if reason:
                self._configure_error = reason
                self.get_logger().error(reason)
                return TransitionCallbackReturn.FAILURE
        if params["backend"] == "torch":
            self.get_logger().warning("backend 'torch' is deprecated: it is now spelled 'pytorch'")
        self.get_logger().info(f"loading model {params['model']} (checkpoint "
                               f"{params['checkpoint'] or 'default'}, device {params['device']})")
        try:
            self.predictor = load_predictor(params)
        except Exception as exc:  # noqa: BLE001 - any load problem fails the transition with its reason
            self._configure_error = f"cannot load the model: {type(exc).__name__}: {exc}"
            self.get_logger().error(self._configure_error)
            return TransitionCallbackReturn.FAILURE
        self._configure_error = ""
        if params["compile"]:
            self.get_logger().info("compile: the first frame (and the first after a speed-profile or image-size "
                                   "change) compiles the model: minutes on a small CPU")
        self._limiter.max_rate = float(params["max_rate"])
        # outputs written straight to their serialised form where rclpy reads them back as the
        # same messages (unipose_ros.cdr): under half the per-frame time of message objects
        self._serialised = cdr.matches_rclpy()
        if not self._serialised:
            self.get_logger().warning("this installation's keypoint or marker message definitions differ from "
                                      "the ones unipose_ros.cdr writes: publishing message objects (slower)")
        self._extras.depth.set_tolerance(float(params["depth_tolerance"]))
        if params["speed_profile"] != "accurate":
            self._apply_settings(self.predictor)

        reliable10 = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self._pubs = {
            "keypoints": self.create_publisher(KeypointInstanceArray, "~/keypoints", reliable10),
            "markers": self.create_publisher(MarkerArray, "~/markers", reliable10),
            "markers_3d": self.create_publisher(MarkerArray, "~/markers_3d", reliable10),
            "annotated": self.create_publisher(Image, "~/image_annotated",
                                               QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)),
            "active_prompt": self.create_publisher(String, "~/active_prompt", LATCHED),
        }
        ok, reason = self._apply_initial_prompt(params)
        if not ok:
            self._configure_error = f"initial prompt rejected: {reason}"
            self.get_logger().error(self._configure_error)
            self._destroy_outputs()
            self.predictor = None
            return TransitionCallbackReturn.FAILURE
        self._prompt_subs = [
            self.create_subscription(String, "~/prompt", self._on_prompt, 10,
                                     callback_group=self._control_group),
            self.create_subscription(VisualPrompt, "~/visual_prompt", self._on_visual_prompt, 1,
                                     callback_group=self._control_group),
        ]
        self._capture_srv = self.create_service(CaptureVisualPrompt, "~/capture_visual_prompt",
                                                self._on_capture, callback_group=self._control_group)
        self.get_logger().info(f"configured: {self._model_name()} on {self.predictor.device}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        qos = image_qos(self._param("image_qos"), int(self._param("image_qos_depth")))
        if self._param("use_compressed"):
            self._image_sub = self.create_subscription(
                CompressedImage, "image/compressed", self._on_compressed, qos,
                callback_group=self._image_group)
        else:
            self._image_sub = self.create_subscription(
                Image, "image", self._on_image, qos, callback_group=self._image_group)
        self._info_sub = self.create_subscription(CameraInfo, "camera_info", self._on_camera_info,
                                                  qos_profile_sensor_data,
                                                  callback_group=self._image_group)
        if self._param("use_depth"):
            self._extras.depth.clear()
            self._depth_sub = self.create_subscription(Image, "depth_image", self._extras.on_depth,
                                                       qos_profile_sensor_data, callback_group=self._image_group)
            if self._param("target_frame"):
                self._extras.start_tf(self)
        self._stop.clear()
        self._slot.reopen()
        self._worker = threading.Thread(target=self._work, name="unipose-worker", daemon=True)
        self._worker.start()
        self.get_logger().info(f"active: listening on {self._image_sub.topic_name}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        self._destroy_outputs()
        self._free_model()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        self._destroy_outputs()
        self._free_model()
        return TransitionCallbackReturn.SUCCESS

    def _stop_processing(self) -> None:
        for sub in (self._image_sub, self._info_sub, self._depth_sub):
            if sub is not None:
                self.destroy_subscription(sub)
        self._image_sub = self._info_sub = self._depth_sub = None
        self._stop.set()
        self._slot.close()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=30.0)
        self._worker = None
        self._slot.clear()

    def _destroy_outputs(self) -> None:
        for sub in self._prompt_subs:
            self.destroy_subscription(sub)
        self._prompt_subs = []
        if self._capture_srv is not None:
            self.destroy_service(self._capture_srv)
            self._capture_srv = None
        self._last_frame = None
        for pub in self._pubs.values():
            self.destroy_publisher(pub)
        self._pubs = {}

    def _free_model(self) -> None:
        self.predictor = None
        self.prompt = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    # ------------------------------------------------------------------ prompts
    def _apply_initial_prompt(self, params: dict) -> tuple[bool, str]:
        """The prompt to start with. A support (support_image/support_keypoints) is what was asked
        for, so it is tried first; the text prompt (empty: what the model knows) is the fallback,
        and it is not even parsed when the support works: a model that knows only its own
        categories would reject a params file's 'person' that is never used."""
        text = params["prompt"] or self.predictor.default_prompt()
        if not (params["support_image"] or params["support_keypoints"]):
            return self._apply_prompt(text, source="parameter")
        ok, visual_reason = self._switch_prompt(
            lambda: resolve_visual_prompt(self.predictor, visual_prompt_from_parameters(params)),
            f"visual prompt {params['support_image'] or params['support_keypoints']!r}",
            "the support_image/support_keypoints parameters")
        if ok:
            return ok, visual_reason
        ok, reason = self._apply_prompt(text, source="parameter")
        return ok, reason if ok else f"{visual_reason}; and {reason}"

    def _apply_prompt(self, text: str, source: str) -> tuple[bool, str]:
        """Make the text prompt `text` the prompt in force (see _switch_prompt)."""
        return self._switch_prompt(lambda: resolve_prompt(self.predictor, text),
                                   f"prompt {quote_for_message(text)}", source)

    def _switch_prompt(self, resolve, what: str, source: str) -> tuple[bool, str]:
        """Make `resolve()` (an ActivePrompt) the prompt from the next frame on: (True, its text);
        or, when it raises, keep the current prompt, say why on ~/active_prompt and in the log,
        and return (False, the reason)."""
        with self._prompt_lock:
            try:
                if self.predictor is None:
                    raise ValueError("no model loaded")
                new = resolve()
            except Exception as exc:  # noqa: BLE001 - any parse/convert/encode problem is a rejection
                current = quote_for_message(self.prompt.text) if self.prompt else "none"
                reason = f"rejected {what} from {source}: {exc} (still in force: {current})"
                self.get_logger().error(reason)
                self._publish_active(REJECTED_PREFIX + reason)
                return False, reason
            self.prompt = new
        self.get_logger().info(f"prompt in force: {new.text}")
        self._publish_active(new.text)
        return True, new.text

    def _publish_active(self, text: str) -> None:
        pub = self._pubs.get("active_prompt")
        if pub is not None:
            pub.publish(String(data=text))

    def _on_prompt(self, msg: String) -> None:
        ok, _ = self._apply_prompt(msg.data, source="topic")
        if ok:
            # keep the parameter in step with the topic, without parsing twice
            self._syncing_prompt = True
            try:
                self.set_parameters([Parameter("prompt", value=self.prompt.text)])
            finally:
                self._syncing_prompt = False

    def _on_visual_prompt(self, msg: VisualPrompt) -> None:
        def resolve():
            check_prompt_fields(msg.keypoint_names, msg.keypoints, msg.skeleton, msg.box)
            if msg.image.width == 0 or msg.image.height == 0:
                raise ValueError("empty support image")
            return self._visual_prompt(image_to_color(msg.image), msg)
        self._switch_prompt(resolve, f"visual prompt '{msg.class_name}'", "topic")

    def _on_capture(self, request, response):
        """~/capture_visual_prompt: the newest input frame + the request's keypoints."""
        frame = self._last_frame

        def resolve():
            if frame is None:
                raise ValueError("no input frame has been processed yet; publish camera images to the "
                                 "detector's `image` topic first")
            return self._visual_prompt(frame[:2], request)
        ok, message = self._switch_prompt(resolve, f"visual prompt '{request.class_name}'", "capture service")
        response.success, response.message = ok, message
        if ok:
            image, order, header = frame
            response.support_image = array_to_image(np.ascontiguousarray(image), f"{order}8", header)
        return response

    def _visual_prompt(self, image_and_order, fields):
        """An ActivePrompt from a support image (array, channel order) and the message fields."""
        image, order = image_and_order
        rgb = image if order == "rgb" else image[:, :, ::-1]
        visual = visual_prompt_from_fields(rgb, fields.class_name, fields.keypoint_names, fields.keypoints,
                                           fields.skeleton, fields.box)
        return resolve_visual_prompt(self.predictor, visual)

    # ------------------------------------------------------------------ input
    def _on_image(self, msg: Image) -> None:
        self._input.add()
        self._slot.put((msg, time.monotonic()))

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._input.add()
        self._slot.put((msg, time.monotonic()))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    # ------------------------------------------------------------------ worker
    def _work(self) -> None:
        while not self._stop.is_set():
            wait = self._limiter.wait_time()
            if wait > 0 and self._stop.wait(wait):
                break
            frame = self._slot.take(timeout=0.2)
            if frame is None:
                continue
            self._limiter.mark()
            try:
                self._process(*frame)
            except Exception as exc:  # noqa: BLE001 - the worker must outlive any bad frame
                if self._stop.is_set() or not self.context.ok():
                    break  # stopping (Ctrl-C shuts the context down mid-frame): not an error
                self._report(f"processing failed: {type(exc).__name__}: {exc}")
                self.get_logger().debug(traceback.format_exc())

    def _report(self, problem: str) -> None:
        self._bad_frames += 1
        self._last_error = problem
        self._last_error_time = time.monotonic()
        if self._throttle.should_report(problem):
            self.get_logger().error(problem)

    def _process(self, msg, received: float) -> None:
        try:
            if isinstance(msg, CompressedImage):
                image, order = compressed_to_color(msg)
            else:
                image, order = image_to_color(msg)
        except ImageConversionError as exc:
            self._report(f"skipped frame {msg.header.frame_id}@{msg.header.stamp.sec}."
                         f"{msg.header.stamp.nanosec:09d}: {exc}")
            return
        prompt, predictor = self.prompt, self.predictor  # one prompt for the whole frame
        if prompt is None or predictor is None:
            return
        self._last_frame = (image, order, msg.header)  # what ~/capture_visual_prompt uses
        tracking, low = self._param("tracking"), self._param("tracking_low_threshold")
        t0 = time.perf_counter()
        instances, threshold = self._extras.detect(predictor, prompt, image, order, tracking, low)
        model_time = time.perf_counter() - t0
        self._model_time.add(model_time)
        height, width = image.shape[:2]
        instances = self._extras.track(instances, prompt, tracking, threshold, low)
        positions, position_frame = None, ""
        if self._depth_sub is not None:
            positions, position_frame, problem = self._extras.positions(
                instances, msg.header, (width, height), self._camera_info, self._param("depth_window"),
                self._param("target_frame"))
            if problem and self._throttle.should_report(problem):
                self.get_logger().warning(problem)

        pubs = self._pubs
        serialised = self._serialised
        pubs["keypoints"].publish((keypoint_array_serialised if serialised else keypoint_array)(
            instances, msg.header, (width, height), prompt, self._model_name(), model_time, positions,
            position_frame))
        if positions is not None and pubs["markers_3d"].get_subscription_count() > 0:
            pubs["markers_3d"].publish((marker_array_3d_serialised if serialised else marker_array_3d)(
                instances, positions, msg.header, position_frame, self._param("marker_lifetime")))
        if self._param("publish_markers") and pubs["markers"].get_subscription_count() > 0:
            projector = PixelProjector.from_camera_info(
                self._camera_info, self._param("marker_depth"), self._param("marker_scale"))
            pubs["markers"].publish((marker_array_serialised if serialised else marker_array)(
                instances, msg.header, projector, (width, height),
                lifetime_s=self._param("marker_lifetime"), frame_id=self._param("marker_frame_id")))
        if self._param("publish_annotated") and pubs["annotated"].get_subscription_count() > 0:
            from unipose_model.visualize import draw_instances

            canvas = draw_instances(np.array(image, order="C"), instances, color=order, copy=False)
            pubs["annotated"].publish(array_to_image(canvas, f"{order}8", msg.header))
        self._processed.add(self._latency(msg.header.stamp, received))

    def _latency(self, stamp, received: float) -> float:
        """Stamp -> publish when the stamp is on this node's clock, else receive -> publish."""
        if stamp.sec or stamp.nanosec:
            now_ns = self.get_clock().now().nanoseconds
            latency = (now_ns - (stamp.sec * 1_000_000_000 + stamp.nanosec)) * 1e-9
            if 0.0 <= latency < 3600.0:
                return latency
        return time.monotonic() - received

    # ------------------------------------------------------------------ diagnostics
    def _model_name(self) -> str:
        return model_label(self._param("model"), self._param("checkpoint"))

    def _publish_diagnostics(self) -> None:
        pub = self._diag_pub
        inp, done, model = self._input.snapshot(), self._processed.snapshot(), self._model_time.snapshot()
        active = self._worker is not None
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: keypoint detector",
                                  hardware_id=str(getattr(self.predictor, "device", "")))
        if self._configure_error:
            status.level, status.message = DiagnosticStatus.ERROR, self._configure_error
        elif not active:
            status.level, status.message = DiagnosticStatus.OK, "inactive"
        elif time.monotonic() - self._last_error_time < 5.0:
            status.level, status.message = DiagnosticStatus.WARN, self._last_error
        elif inp["count"] == 0:
            status.level, status.message = DiagnosticStatus.OK, "waiting for images"
        else:
            status.level, status.message = DiagnosticStatus.OK, "processing"
        values = {
            "input_rate_hz": f"{inp['rate']:.2f}",
            "processed_rate_hz": f"{done['rate']:.2f}",
            "frames_received": str(self._slot.received),
            "frames_processed": str(self._processed.total),
            "frames_dropped": str(self._slot.dropped),
            "frames_rejected": str(self._bad_frames),
            "latency_mean_ms": f"{done['mean'] * 1e3:.1f}",
            "latency_max_ms": f"{done['max'] * 1e3:.1f}",
            "model_time_ms": f"{model['mean'] * 1e3:.1f}",
            "active_prompt": self.prompt.text if self.prompt else "",
            "model": self._model_name(),
            "device": str(getattr(self.predictor, "device", "")),
            "backend": str(self._param("backend")),
            "precision": str(getattr(self.predictor, "dtype", self._param("precision"))).replace("torch.", ""),
            "last_error": self._last_error,
            **self._extras.diagnostics(),
        }
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        out = DiagnosticArray(status=[status])
        out.header.stamp = self.get_clock().now().to_msg()
        pub.publish(out)


def main(argv=None, make_executor=None) -> int:
    """`unipose-detector`. `make_executor` (default: SingleThreadedExecutor), called after
    rclpy.init, exists so that scripts/bench_ros.py can time the node under another executor."""
    rclpy.init(args=argv)
    node = DetectorNode()
    # One executor thread: the callbacks are short (the model runs in the worker thread). rclpy's
    # MultiThreadedExecutor busy-waits while a callback of a mutually exclusive group runs and
    # holds the GIL meanwhile: with a 25 Hz 1024x1024 camera the model took a median 0.6-1.1 s and
    # a p95 2.9-3.6 s per frame instead of 0.42 / 0.50 s (docs/BENCHMARKS.md, "ROS node").
    executor = (make_executor or SingleThreadedExecutor)()
    executor.add_node(node)
    try:
        if node.get_parameter("autostart").value:
            if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                node.trigger_activate()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node._stop_processing()
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
