# One training run: the parameterised notebook, executed by papermill. The executed
# copy (with its outputs and plots) is kept beside the run's metrics.json.

rule train:
    input:
        notebook="notebooks/train.ipynb",
        # a control (replay-*, shuffled-*) reads the trace of the run it controls
        source=control_source,
    output:
        metrics=f"{RESULTS}/runs/{{task}}/{{scheduler}}/seed{{seed}}/metrics.json",
        history=f"{RESULTS}/runs/{{task}}/{{scheduler}}/seed{{seed}}/history.csv",
        trace=f"{RESULTS}/runs/{{task}}/{{scheduler}}/seed{{seed}}/lr_trace.csv",
        notebook=f"{RESULTS}/runs/{{task}}/{{scheduler}}/seed{{seed}}/train.ipynb",
    params:
        parameters=run_parameters,
    # the longest runs first, so that short ones fill both cores at the end
    priority: train_priority
    log:
        f"{RESULTS}/logs/train/{{task}}/{{scheduler}}/seed{{seed}}.log",
    # the job's wall seconds, papermill's kernel start included (benchmarks/run_times.csv)
    benchmark:
        f"{RESULTS}/benchmarks/train/{{task}}/{{scheduler}}/seed{{seed}}.tsv"
    threads: config["threads_per_run"]
    resources:
        gpu=config["processes_per_run"] if config["device"] == "cuda" else 0,
        # minutes, for cluster executors; a retried job (profiles/slurm) gets more time
        runtime=lambda wildcards, attempt: 120 * attempt,
        # a resource, not a param: keeping checkpoints changes no result, so it must
        # not rerun finished runs (params are a rerun trigger)
        keep_checkpoints=int(config["keep_checkpoints"]),
    wildcard_constraints:
        seed=r"\d+",
    conda:
        "../../environment.yml"
    shell:
        # parameters are checked before papermill starts a kernel (papermill checks no types)
        "python -m uncertainty_lr.experiment check-parameters {params.parameters:q} > {log:q} 2>&1 "
        "&& UNCERTAINTY_LR_KEEP_CHECKPOINTS={resources.keep_checkpoints:q} "
        "papermill {input.notebook:q} {output.notebook:q} -k python3 --no-progress-bar "
        "-y {params.parameters:q} >> {log:q} 2>&1"


# One run of the sensitivity sweep (config `sensitivity`): the sweep task with one
# point's scheduler overrides, under results/sensitivity/.
rule train_sensitivity:
    input:
        notebook="notebooks/train.ipynb",
    output:
        metrics=f"{RESULTS}/sensitivity/{{task}}/{{scheduler}}/{{label}}/seed{{seed}}/metrics.json",
        history=f"{RESULTS}/sensitivity/{{task}}/{{scheduler}}/{{label}}/seed{{seed}}/history.csv",
        trace=f"{RESULTS}/sensitivity/{{task}}/{{scheduler}}/{{label}}/seed{{seed}}/lr_trace.csv",
        notebook=f"{RESULTS}/sensitivity/{{task}}/{{scheduler}}/{{label}}/seed{{seed}}/train.ipynb",
    params:
        parameters=sensitivity_parameters,
    log:
        f"{RESULTS}/logs/sensitivity/{{task}}/{{scheduler}}/{{label}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/sensitivity/{{task}}/{{scheduler}}/{{label}}/seed{{seed}}.tsv"
    threads: config["threads_per_run"]
    resources:
        gpu=config["processes_per_run"] if config["device"] == "cuda" else 0,
        runtime=lambda wildcards, attempt: 120 * attempt,
        keep_checkpoints=int(config["keep_checkpoints"]),
    wildcard_constraints:
        seed=r"\d+",
    conda:
        "../../environment.yml"
    shell:
        "python -m uncertainty_lr.experiment check-parameters {params.parameters:q} > {log:q} 2>&1 "
        "&& UNCERTAINTY_LR_KEEP_CHECKPOINTS={resources.keep_checkpoints:q} "
        "papermill {input.notebook:q} {output.notebook:q} -k python3 --no-progress-bar "
        "-y {params.parameters:q} >> {log:q} 2>&1"
