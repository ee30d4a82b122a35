"""Tensor statistics: one tensor's summary, many at once (segments, stacked rows), and the
`state_dict` diff with the previous copy it keeps. Import modules directly; this package imports
nothing.
"""
