"""`modscope.watch()`: modscope in the user's own training loop (`handle.Watch`), the app at a
break in it (`app`), and the integrations built on it (`modscope.integrations`). Import modules
directly; this package imports nothing.
"""
