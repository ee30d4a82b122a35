"""Thin callbacks over `modscope.watch()` for trainers: `lightning.ModscopeCallback` and
`transformers.ModscopeCallback`. Each imports its library; `import modscope` imports neither.
"""
