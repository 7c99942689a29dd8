"""The admin gRPC API (`xds_control.admin.v1.Admin`): server, client and CLI.

* `ports` — the two narrow protocols the service needs from other parts
  (`HealthControl` from health, `NodeDirectory` from xds) and `NodeInfo`;
* `service` — the grpc.aio servicer over a `ViewStore`, and `start_admin_server`;
* `convert` — view objects <-> protobuf messages (pure);
* `auth` — loopback detection and the bearer-token check for mutating calls;
* `client` — `AdminClient` (async) returning view objects; `watch()` is what
  the aggregator consumes;
* `cli` — the `xds-control admin ...` click group;
* `v1/` — the proto and its generated code (regenerate with `regen.sh`).

Only `ports` is imported eagerly: the others pull in grpc.
"""

from xds_control.admin.ports import HealthControl, NodeDirectory, NodeInfo, TypeStatus

__all__ = ["HealthControl", "NodeDirectory", "NodeInfo", "TypeStatus"]
