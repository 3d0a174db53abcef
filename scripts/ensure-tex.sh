#!/usr/bin/env bash
# Make sure the LaTeX tools the paper needs are installed (Debian/Ubuntu packages).
# As root with apt-get, installs them; otherwise names them and fails.
set -euo pipefail
PACKAGES="latexmk texlive-latex-base texlive-latex-recommended texlive-fonts-recommended lmodern"
if command -v latexmk >/dev/null 2>&1 && kpsewhich booktabs.sty >/dev/null 2>&1 \
   && kpsewhich lmodern.sty >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing LaTeX (about 200 MB): $PACKAGES"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null
  exit 0
fi
cat >&2 <<MSG
error: LaTeX is needed to build the paper, and latexmk or a package is missing.
Install, as root: apt-get install --no-install-recommends $PACKAGES
(other systems: a TeX Live with latexmk, booktabs, natbib, microtype and lmodern).
MSG
exit 1
