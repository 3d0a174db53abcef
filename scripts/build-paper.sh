#!/usr/bin/env bash
# Build paper/main.pdf from paper/main.tex, paper/references.bib, the generated
# tables (paper/generated/) and the figures. The paper rule of the pipeline and the
# tests call this; extra arguments go to latexmk (e.g. -g to force a rebuild).
# TeX runs confined, so that no text of a generated .tex can reach the machine:
#  - in a scratch copy of those inputs (figures included), so that it can write
#    (\openout) only there;
#    main.pdf is then moved into paper/ (temp file and rename);
#  - openin_any=p / openout_any=p: no absolute path, no '..', no dot file;
#  - shell_escape=f: no \write18 and no piped \input of any command;
#  - the figures are copied in too and found through TEXINPUTS (graphicspath's
#    ../figures is for builds by hand: refused under openin_any=p).
#  - SOURCE_DATE_EPOCH / FORCE_SOURCE_DATE: two builds of the same inputs are identical.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
scratch="$(mktemp -d "${TMPDIR:-/tmp}/uncertainty-lr-paper.XXXXXX")"
# the log stays readable in paper/main.log, whatever happened
trap 'cp -f "$scratch/main.log" "$root/paper/main.log" 2>/dev/null || true; rm -rf "$scratch"' EXIT
cp "$root/paper/main.tex" "$scratch/"
[ -f "$root/paper/references.bib" ] && cp "$root/paper/references.bib" "$scratch/"
[ -d "$root/paper/generated" ] && cp -R "$root/paper/generated" "$scratch/generated"
[ -d "$root/figures" ] && cp -R "$root/figures" "$scratch/figures"
export openin_any=p openout_any=p shell_escape=f
# relative, so that the PDF (pdfTeX records each included file's path) does not
# depend on where the repository lies
export TEXINPUTS="figures:${TEXINPUTS:-}"
export SOURCE_DATE_EPOCH=1700000000 FORCE_SOURCE_DATE=1
cd "$scratch"
latexmk -pdf -interaction=nonstopmode -halt-on-error "$@" main.tex
cp main.pdf "$root/paper/.main.pdf.tmp"
mv "$root/paper/.main.pdf.tmp" "$root/paper/main.pdf"
