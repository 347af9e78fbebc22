"""The command line: `atts run`, `atts calibrate`, `atts models`, `atts report`."""
