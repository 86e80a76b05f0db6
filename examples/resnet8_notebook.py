# %% [markdown]
# # ResNet-8 through shiftbook, from Python
#
# A notebook-style walk through the library API (`shiftbook.flow`): compile ResNet-8 for the
# `small` core (4x8 shift PEs), run the compiled program in the functional simulator, and
# read per-layer cycles and bit-exactness from the returned objects. Each `# %%` block is a
# cell (Jupyter with jupytext, VS Code and Spyder open this file as a notebook); run as a
# script it does the same top to bottom: `python examples/resnet8_notebook.py [OUT_DIR]`.
# `tests/test_examples.py` runs it.

# %%
import sys
import tempfile
from pathlib import Path

from shiftbook import flow

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()) / "resnet8"

# %% [markdown]
# ## Compile
# Built-in `resnet8` with seeded random weights, two calibration images; the bundle (program,
# memory image, integer IR, typed manifest) is written to `out`.

# %%
compiled = flow.compile("resnet8", config="small", calib=2, seed=0, output=out)
print(f"{len(compiled.layers)} layers, {compiled.ideal_cycles} ideal cycles on "
      f"{compiled.config.name} ({compiled.config.rows}x{compiled.config.cols} PEs)")
for lay in compiled.layers[:3]:
    print(f"  {lay.index:2d} {lay.name:10s} {lay.op:9s} {lay.macs:9d} MACs, "
          f"{lay.tiles.groups} column group(s), {len(lay.tiles.bands)} row band(s)")

# %% [markdown]
# ## Run at the functional level
# Every layer's output is compared element by element with the golden integer executor.

# %%
run = flow.run(compiled.bundle, level="functional")
print(f"bit-exact: {run.bit_exact}; {run.cycles} cycles ({run.cycles_source}), "
      f"utilization {run.utilization}")
for lay in run.layers:
    print(f"  {lay.name:10s} {lay.cycles:8d} cycles  ideal {lay.ideal_cycles:7d}  "
          f"exact {lay.bit_exact}")

# %% [markdown]
# ## Cycle estimate without simulating
# The exact cycle model (the one the RTL matches cycle for cycle) from the bundle alone.

# %%
est = flow.estimate(compiled.bundle)
assert [lc.cycles for lc in est.layers] == [lay.cycles for lay in run.layers]
print(f"estimate: {est.total} cycles in {len(est.layers)} layers")

# %% [markdown]
# ## Energy per inference
# shiftbook's shift-add datapath vs an int8 multiply-accumulate design and fp32.

# %%
en = flow.energy(compiled.bundle)
for design, pj in en.totals.items():
    print(f"  {design:10s} {pj / 1e6:8.2f} uJ  ({en.ratios()[design]:.2f}x shiftbook)")
