# One training run: the parameterised notebook, executed by papermill. The executed
# copy (with its outputs and plots) is kept beside the run's metrics.json. Every
# path comes from uncertainty_lr_study.paths (wildcard patterns in place of values).

RUN = paths.run_dir(RESULTS, "{task}", "{scheduler}", "{seed}")
SWEEP_RUN = paths.sweep_run_dir(RESULTS, "{task}", "{scheduler}", "{label}", "{seed}")


rule train:
    input:
        notebook="notebooks/train.ipynb",
        # a control (replay-*, shuffled-*) reads the trace of the run it controls
        source=control_source,
    output:
        **run_outputs(RUN),
    params:
        parameters=run_parameters,
    # the longest runs first, so that short ones fill both cores at the end
    priority: train_priority
    log:
        str(paths.job_log(RESULTS, RUN)),
    # the job's wall seconds, papermill's kernel start included (benchmarks/run_times.csv)
    benchmark:
        str(paths.job_benchmark(RESULTS, RUN))
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
        "python -m uncertainty_lr_study.experiment check-parameters {params.parameters:q} > {log:q} 2>&1 "
        "&& UNCERTAINTY_LR_KEEP_CHECKPOINTS={resources.keep_checkpoints:q} "
        "papermill {input.notebook:q} {output.notebook:q} -k python3 --no-progress-bar "
        "-y {params.parameters:q} >> {log:q} 2>&1"


# One run of the sensitivity sweep (config `sensitivity`): the train rule with the
# sweep task and one point's scheduler overrides, under results/sensitivity/ (no
# control source; the default priority).
use rule train as train_sensitivity with:
    input:
        notebook="notebooks/train.ipynb",
    output:
        **run_outputs(SWEEP_RUN),
    params:
        parameters=sensitivity_parameters,
    priority: 0
    log:
        str(paths.job_log(RESULTS, SWEEP_RUN)),
    benchmark:
        str(paths.job_benchmark(RESULTS, SWEEP_RUN))
