"""The performance experiments, each on one skeleton (``Experiment``): measure on a
target, render the markdown from the JSON, draw the chart from the JSON.

Rendering from the JSON (not from live objects) is what lets ``python -m
experiments docs`` redraw every table from the committed reports.
"""
