"""Put this checkout's src/ on the path of the running environment (a .pth file in
its site-packages), so that ``import uncertainty_lr_study`` works there as it does
in the pipeline's jobs. The library is installed (editable) by pip; the study is
not a distribution (pyproject.toml), so pip does not do this for it."""

import sysconfig
from pathlib import Path

src = Path(__file__).resolve().parents[1] / "src"
pth = Path(sysconfig.get_paths()["purelib"]) / "uncertainty_lr_study.pth"
pth.write_text(f"{src}\n")
print(f"{pth}: {src}")
