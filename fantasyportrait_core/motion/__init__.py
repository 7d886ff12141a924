"""Motion features: the PD-FGC encoder, the 554-wide feature layout, the frames -> faces -> features pipeline,
and per-component motion edits."""
