"""Benchmarks for asyncclient: body decode, stream parse and decode, end to end, memory.

Run ``python -m benchmarks --help``. Each section measures our client side by side with the
libraries users would otherwise pick and with a floor (the least work that gets the same
result with the same tools), in one run, and reports medians of repeats with ratios.
"""
