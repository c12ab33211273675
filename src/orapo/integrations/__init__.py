"""OraPO inside other training libraries. ``orapo.integrations.trl``: TRL's ``GRPOTrainer``
with the OraPO term (docs/trl.md). Imported on demand: TRL is an optional dependency."""
