"""Rewind and "what if": checkpoints of the training state thinned to a budget, the random states
they restore, and the time-travel component a Session delegates to. Import modules directly; this
package imports nothing.
"""
