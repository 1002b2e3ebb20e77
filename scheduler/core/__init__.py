"""The scheduler's pure core: request admission, the EDF queue, the request life cycle, latency views, health
rules, gears, shedding and the stats record, with no asyncio, no sockets and no subprocess, and ``now`` passed in.

The live engine (``scheduler/sidecar/``) and the simulator (``scheduler/offline/sim.py``) drive the same core, so
a rule written here holds in both; the policies (``scheduler/policies/``) are its plug-ins."""
