"""Layer health while it is wanted: per-module output statistics noted on the output's device
(`parts`) and brought to the host once per iteration (`collector.LayerCollector`). Import modules
directly; this package imports nothing.
"""
