"""Print a fingerprint of a converted Gemma folder (config + a few tensor sums) to compare machines."""
import json
import sys
from pathlib import Path

from safetensors import safe_open

f = Path(sys.argv[1])
cfg = json.loads((f / "config.json").read_text())
print({k: v for k, v in sorted(cfg.items()) if not isinstance(v, (dict, list)) or k in ("layer_types", "rope_scaling", "rope_parameters", "eos_token_id")})
for st in sorted(f.glob("*.safetensors")):
    with safe_open(st, "pt") as fh:
        for name in sorted(fh.keys()):
            if any(s in name for s in ("norm", "embed")) and ("layers.0." in name or "layers." not in name):
                t = fh.get_tensor(name).float()
                print(name, tuple(t.shape), round(t.sum().item(), 3), round(t.abs().mean().item(), 5))
