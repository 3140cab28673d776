"""Worked examples of user reducers (name them in the config as ``module:Class``)."""
