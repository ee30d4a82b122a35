"""The snapshot contract: what crosses from the engine to the controller, the reports, the app
and recordings, as plain data and the words for it. No torch here (an import-linter contract),
so the app and the command line build on it without loading torch. Import modules directly;
this package imports nothing.

- `tensors`, `tree`, `steps`, `findings`: the frozen snapshot types (a recording names them);
- `hook_spec`, `hook_notes`: what a hook is and what to know about its kind;
- `break_spec`: the `--break` grammar;
- `layer_types`, `layer_columns`: layer health and the columns that show it;
- `timelines`: what "what if" compares against;
- `fmt`, `sizes`, `bounded`: numbers, sizes and bounded histories for people;
- `script_names`, `exit_codes`, `version`: the names a model script defines, the exit codes.
"""
