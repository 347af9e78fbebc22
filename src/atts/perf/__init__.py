"""atts.perf: the performance model.  The roofline bound of ATTS over target-only
(``roofline``), device and model presets (``devices``), a discrete-event simulator of the
runner at GPU scale (``simulator``, ``lifecycle``, ``workload``), step statistics read from run
folders (``stats``), and what ``atts simulate`` prints (``scenarios``, ``tables``, ``plots``).

numpy only; matplotlib is imported by ``plots`` when a figure is drawn.
"""
