"""train.py with fp8=True allowed on a CPU, for the tests: torch._scaled_mm runs there too, so train.py's
float8 path (the conversion, DDP over gloo, plain checkpoints, resume; eager, as the tests run it) is checked
without a GPU. Used as train.py is: python tests/fp8_on_cpu.py --fp8=True --dtype=bfloat16 ..., or under
torchrun. Each rank prints how many Linears it converted, so a test can tell that the float8 path ran and not
the plain one."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train  # noqa: E402
from inheritune.fp8 import Float8Linear, convert_to_float8  # noqa: E402
from inheritune.util import cli  # noqa: E402


def convert_and_report(model, tokens_per_micro_batch):
    model = convert_to_float8(model, tokens_per_micro_batch)
    print(f"fp8_on_cpu: {sum(isinstance(m, Float8Linear) for m in model.modules())} Float8Linear", flush=True)
    return model


train.convert_to_float8 = convert_and_report
train.check_fp8_device = lambda device: None
cli(train.main)
