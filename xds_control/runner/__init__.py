"""`xds-control up`: control plane, Envoy, aggregator (and the demo backends) as one supervised group.

`plan` decides (what to start, in which order, when each part is ready, what an
exit means); `supervisor` runs processes; `report` tells the user; `up` glues them.
"""

from xds_control.runner.up import run_up

__all__ = ["run_up"]
