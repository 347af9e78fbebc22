"""atts.perf: the performance model.  The roofline bound of ATTS over target-only
(``roofline``), device and model presets (``devices``), the simulator, which runs the real
runner on a virtual clock (``virtual_clock``) with modelled engines (``simulator``,
``cost_engine``) replaying plans (``workload``, ``replay``), step statistics read from run
folders (``stats``), and what ``atts simulate`` prints (``scenarios``, ``tables``, ``plots``).

numpy and the runner (no model is loaded); matplotlib is imported by ``plots`` when a figure
is drawn.
"""
