"""Tools that run before or beside serving: the profiler, the cascade planner, the discrete-event simulator, the
INFaaS variant exporter and the model-repository writer (``superserve profile``, ``plan``, ``simulate``,
``add-model``)."""
