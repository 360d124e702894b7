"""spd_lifecycle_node: spd_node as a managed (lifecycle) node, brought up by a lifecycle manager
or over the ``<node>/change_state`` service (lifecycle_msgs/srv/ChangeState).

* **configure** reads the parameters, loads the checkpoint and creates the subscriptions, the
  (lifecycle) publishers, the worker and the diagnostics; a bad checkpoint or parameter fails the
  transition with the reason logged in one line and the node stays unconfigured.
* **activate** enables the publishers and starts the worker: images are encoded, queries answered.
* **deactivate** stops answering: images and queries are counted (``ignored_<topic>``), not used;
  the frame cache is kept, so a query for a frame sent before deactivating is answered after the
  next activate.
* **cleanup** stops the worker and frees the model and everything configure made; **shutdown**
  does the same from any state (finalized; the process ends on Ctrl-C or SIGTERM).

Non-run-time parameters (``checkpoint``, ``device``, ...) can be changed while unconfigured and
apply at the next configure; while configured they are refused.
"""

from __future__ import annotations

import sys

from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from spd_ros.node_common import DepthNodeMixin, StartupError, run
from spd_ros.params import NODE_RUNTIME, RUNTIME, read


class SpdLifecycleNode(DepthNodeMixin, LifecycleNode):
    """The managed node: the pipeline of :class:`~spd_ros.node_common.DepthNodeMixin` per transition."""

    def __init__(self) -> None:
        super().__init__("spd_node")
        self.answering = False
        self._init_common(configurable=True)
        self.add_on_set_parameters_callback(self._refuse_while_configured)
        self.get_logger().info("spd_node (managed) unconfigured: configure loads the checkpoint")

    def _refuse_while_configured(self, params) -> SetParametersResult:
        fixed = [p.name for p in params if p.name not in RUNTIME and p.name not in NODE_RUNTIME]
        if fixed and self.worker is not None:
            reason = f"{', '.join(fixed)} take effect at configure: clean up, change it, configure again"
            return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _output_publisher(self, msg_type, topic: str, qos):
        pub = self._keep(self.destroy_lifecycle_publisher, self.create_lifecycle_publisher(msg_type, topic, qos))
        if self.answering:  # made while active (publish_markers switched on): enabled at once
            pub.on_activate(None)
        return pub

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        p = read(self)
        try:
            predictor = self._build(p)
        except StartupError as e:
            self.get_logger().error(f"configure failed: {e}")
            return TransitionCallbackReturn.FAILURE
        except Exception as e:  # unexpected: the transition errors, on_error cleans up
            self.get_logger().error(f"configure failed: {e!r}")
            raise
        self.get_logger().info(
            f"configured: {p.checkpoint} on {predictor.device} ({p.precision}), pixel budget "
            f"{predictor.pixel_budget}, listening on {'image/compressed' if p.compressed else 'image'}; "
            "activate to answer"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.worker.start()
        result = super().on_activate(state)  # enables the lifecycle publishers
        self.answering = result == TransitionCallbackReturn.SUCCESS
        self.get_logger().info("active: answering")
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.answering = False
        self.get_logger().info("inactive: images and queries ignored (counted), frame cache kept")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._free("cleaned up")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._free("shut down")
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._free("error in a transition")
        return TransitionCallbackReturn.SUCCESS

    def _free(self, what: str) -> None:
        self.answering = False
        joined = self._teardown()
        busy = " (worker still busy)" if joined is False else ""
        self.get_logger().info(f"{what}: model and worker freed{busy}")

    def destroy_node(self) -> None:
        self.answering = False
        self._release_logging(self._teardown())
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run(SpdLifecycleNode, args)


if __name__ == "__main__":
    sys.exit(main())
