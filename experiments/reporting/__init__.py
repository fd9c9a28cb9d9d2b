"""Every report's drawing, in one place: each experiment's ``render(data)`` (markdown)
and ``chart(data, path)`` (PNG) in a module named after it, the tables shared by
several reports, and the docs generated from ``reports/*.json`` (``docs``)."""
