"""The model half's public API, from the resolved params.yaml dict (assets/params.py): what the
`spotdiff` CLI, the DVC stages and the Dagster assets all call, as assets/prepare.py is for the
data half. Each entry point only picks the profile and overrides, then calls one of:

    pretrain.pretrain(params)                encoder pretraining (writes pretrain.json)
    train.train(params, run_name, tags)      a Ray Train run, tracked in MLflow
    evaluate.evaluate(params, predictions)   scores of a predictions file (one metrics file)
    registry.register(params) / .promote(params) / .promotion_check(params)
    ablate.run_variants(params, ...) / .write_report(params, ...)

A user mistake is an assets.params.UserError (one line at every entry point)."""
