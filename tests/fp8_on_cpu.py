"""train.py with fp8=True allowed on a CPU, for the tests: torch._scaled_mm runs there too, so train.py's float8 path
(conversion before compile and DDP, plain checkpoints, resume) is checked without a GPU. Used as train.py is:
python tests/fp8_on_cpu.py --fp8=True --dtype=bfloat16 ..., or under torchrun."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train  # noqa: E402

train.check_fp8_device = lambda device: None
train.main()
