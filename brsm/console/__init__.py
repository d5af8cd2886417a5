"""What brsm shows a person or a script: text, tables, JSON documents, progress. Below the CLI, so the
composition root (brsm.wiring) can hand progress to the workflows without importing the CLI."""
