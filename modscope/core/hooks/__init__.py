"""modscope's module hooks: the manager that attaches and detaches them, the observers that share
what PyTorch calls, what they capture, every hook a module has (whoever registered it), and the
event log they fill. Import modules directly; this package imports nothing.
"""
