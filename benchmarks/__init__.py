"""Benchmarks for asyncclient: body decode, streams, end to end, memory, overhead ladders.

Run ``python -m benchmarks --help``. Each section measures our client side by side with the
libraries users would otherwise pick and with a floor (the least work that gets the same
result with the same tools), in one run, and reports medians of repeats with ratios.
"""
