"""atts: asynchronous, conformally calibrated test-time scaling.

A small draft model writes reasoning steps, a large target model scores each step with one
prefill pass, and a conformal p-value against a calibration bank decides per step whether to
keep it, let the target continue after it, or let the target regenerate it.

This module stays light on purpose: importing it loads no engine (llama_cpp, torch,
transformers are imported lazily by the engine that needs them).
"""

__version__ = "0.1.0"
