# The paper: LaTeX sources + generated tables and figures -> paper/main.pdf.
# SOURCE_DATE_EPOCH / FORCE_SOURCE_DATE make two builds of the same inputs identical.


rule paper:
    input:
        tex="paper/main.tex",
        bib="paper/references.bib",
        tables=rules.tables.output,
        figures=rules.figures.output,
    output:
        "paper/main.pdf",
    log:
        f"{RESULTS}/logs/paper.log",
    conda:
        "../../environment.yml"
    shell:
        "SOURCE_DATE_EPOCH=1700000000 FORCE_SOURCE_DATE=1 "
        "latexmk -pdf -interaction=nonstopmode -halt-on-error -cd {input.tex} > {log} 2>&1"
