#!/usr/bin/env bash
# Build paper/main.pdf from paper/main.tex, the generated tables and the figures.
# The paper rule of the pipeline and the tests call this; extra arguments go to
# latexmk (e.g. -g to force a rebuild).
#  - openin_any=p / openout_any=p: TeX may read and write only files below paper/
#    (or found on its own search path): no absolute path, no '..', no dot file, so
#    no text of a generated .tex can pull another file of the machine into the PDF.
#  - TEXINPUTS puts ../figures on the search path (graphicspath's ../figures is
#    refused under openin_any=p; it stays for builds by hand).
#  - SOURCE_DATE_EPOCH / FORCE_SOURCE_DATE: two builds of the same inputs are identical.
set -euo pipefail
cd "$(dirname "$0")/../paper"
export openin_any=p openout_any=p
export TEXINPUTS="../figures:${TEXINPUTS:-}"
export SOURCE_DATE_EPOCH=1700000000 FORCE_SOURCE_DATE=1
exec latexmk -pdf -interaction=nonstopmode -halt-on-error "$@" main.tex
