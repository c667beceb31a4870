"""Measuring: ``molpipe bench`` (schedules side by side), ``molpipe simulate`` (the
discrete-event model of the pipeline), plots, and fault injection for tests and benchmarks."""
