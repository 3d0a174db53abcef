# From run outputs to the aggregate table, the figures and the LaTeX tables.

from uncertainty_lr_study.analysis.figures import FIGURES
from uncertainty_lr_study.analysis.latex import GENERATED


rule aggregate:
    input:
        [str(paths.run_dir(RESULTS, t, s, k) / "metrics.json") for t, s, k in RUNS],
    output:
        runs=f"{AGGREGATE}/runs.csv",
        history=f"{AGGREGATE}/history.csv",
        comparison=f"{AGGREGATE}/comparison.csv",
        signal_levels=f"{AGGREGATE}/signal_levels.csv",
    log:
        f"{RESULTS}/logs/aggregate.log",
    conda:
        "../../environment.yml"
    params:
        out=folder_of("runs"),
    shell:
        "python -m uncertainty_lr_study.analysis aggregate --out {params.out:q} {input:q} > {log:q} 2>&1"


rule aggregate_sensitivity:
    input:
        [
            str(paths.sweep_run_dir(RESULTS, t, s, label, k) / "metrics.json")
            for t, s, label, k in SENSITIVITY_RUNS
        ],
    output:
        f"{AGGREGATE}/sensitivity.csv",
    log:
        f"{RESULTS}/logs/aggregate_sensitivity.log",
    conda:
        "../../environment.yml"
    shell:
        "python -m uncertainty_lr_study.analysis sensitivity --out {output:q} {input:q} > {log:q} 2>&1"


rule figures:
    input:
        runs=rules.aggregate.output.runs,
        history=rules.aggregate.output.history,
        sensitivity=rules.aggregate_sensitivity.output,
    output:
        expand("figures/{name}.{ext}", name=FIGURES, ext=["pdf", "png"]),
    log:
        f"{RESULTS}/logs/figures.log",
    conda:
        "../../environment.yml"
    params:
        aggregate=folder_of("runs"),
    shell:
        "python -m uncertainty_lr_study.analysis figures --aggregate {params.aggregate:q} --out figures "
        "> {log:q} 2>&1"


rule tables:
    input:
        runs=rules.aggregate.output.runs,
        comparison=rules.aggregate.output.comparison,
        signal_levels=rules.aggregate.output.signal_levels,
        sensitivity=rules.aggregate_sensitivity.output,
    output:
        [f"paper/generated/{name}" for name in GENERATED],
    log:
        f"{RESULTS}/logs/tables.log",
    conda:
        "../../environment.yml"
    params:
        aggregate=folder_of("runs"),
        config_name=config.get("paper", {}).get("config_name", ""),
    shell:
        "python -m uncertainty_lr_study.analysis tables --aggregate {params.aggregate:q} "
        "--out paper/generated --config-name {params.config_name:q} > {log:q} 2>&1"
