"""The interactive app: `modscope SCRIPT` (Textual); `launch.run_app` is its entry point."""
