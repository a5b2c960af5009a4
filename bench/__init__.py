"""ctpoller's performance benchmark: an OpenREM-shaped data generator (generate.py) and the benchmark (run.py).

Not part of the installed package. See bench/RESULTS.md for how to run it and what it found.
"""
