"""One run of Algorithm 1: its configuration, steps, loop, run folder, samplers, metrics, report, sweep."""
