"""What the passes know about the hardware: SoC data (`passes.target.soc`) and
the cost model (`passes.target.cost`).  They live under `passes/` so placement
and tiling read them without importing the driver."""
