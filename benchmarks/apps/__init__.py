"""Worker-side applications: one module per library, all sharing the task bodies."""
