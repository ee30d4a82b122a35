"""The model as it is: one walk over its modules, the inventory of what it holds, what never
registered, its `state_dict`, its structure and whether a checkpoint loads into it. Import modules
directly; this package imports nothing.
"""
