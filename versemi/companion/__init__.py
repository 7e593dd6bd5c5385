"""The companion layer: what turns runs into the book's tables, statistics, figures and pages.

Nothing in the core (model, losses, mixing, methods, train, evaluate, data, config, runs) imports it.
See ARCHITECTURE.md for the modules and the concepts each holds.
"""
