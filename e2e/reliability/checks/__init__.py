"""One module per check: LABEL (its summary line) and run(ctx) (ctx: runner.Context)."""
