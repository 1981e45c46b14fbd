"""fedstack benchmarks: `python -m bench` (see bench/__main__.py). They print tables and
draw a chart; they assert no timings."""
