"""The session controller: commands in, frozen updates out, between the engine and the app.

This package imports nothing; `commands`, `updates` and `thread` import no torch (the app
uses them), `controller` owns the Session and does the torch work.
"""
