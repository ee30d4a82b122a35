"""The user's model script: loading it, reading its names, calling its code and turning what it
raises, prints and warns into something a person can act on; the files modscope writes.
Import modules directly; this package imports nothing.
"""
