"""`driftbench bench`: what a drift run costs, as ratios against bare baselines.

Every figure is measured in one process run on this machine: the service's own
path (a backend job, a TF.js job, a run through the HTTP API, a query) against the
least a user could do to get the same numbers (a `model.predict`, a page that
loads the model and predicts once, the sum of those). Ratios, not seconds, are
what the targets are about, so they mean the same on a slower machine.
"""
