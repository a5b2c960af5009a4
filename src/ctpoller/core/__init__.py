"""ctpoller's pure core: standard library and core only, no clock, no I/O."""
