"""Demo and test helpers: an OpenREM import simulator and seed exams."""
