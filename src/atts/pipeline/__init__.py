"""The ATTS pipeline: one sample's rounds of steps, the strategies, and online calibration."""
