# The paper: LaTeX sources + generated tables and figures -> paper/main.pdf.
# scripts/build-paper.sh: reproducible (SOURCE_DATE_EPOCH), TeX file reading
# restricted to paper/ and the figures (openin_any=p).


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
        "scripts/build-paper.sh > {log:q} 2>&1"
