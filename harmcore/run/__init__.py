"""Running jobs: config schemas, the command line, one pruning job stage by stage, and recipes.
The only package that knows Hydra.

    config.py      the schemas of every config group (conf/ holds the values)
    options.py     config group options as dataclasses (model.counterpart, eval_domain)
    cli.py         the entry points' plumbing: argv checks, one-line errors, compose outside Hydra
    session.py     what a process keeps between jobs (models, scores, selectors, vLLM engines)
    stages.py      cached stages (content-addressed cache and job-folder markers)
    context.py     JobContext: settings + session + stages; cached generations and NLLs
    prepare.py     the job's data (calibration, evaluation, references); targets.py: reverse targets
    scores.py      cached scores and the set-difference mask
    evaluate.py    dense and pruned evaluation (judges, NLLs, the measurement suite)
    job.py         run_job: one job (or a curve walked in one process) into its folder
    hashing.py     config and curve hashes; provenance.py: provenance.json
    failures.py    FAILED markers; callbacks.py: the sweep's reports at the end of a multirun
    datagen.py     recipe: calibration data files (experiments.generate_data)
    em.py          recipe: emergent misalignment (experiments.finetune_em, experiment=emergent_misalignment)
    export.py      a job's pruned model as a Hugging Face checkpoint (harmcore export)
    serving.py     harmcore serve: a job, an export or a model folder behind vLLM's OpenAI server

May import every package below it.
"""
