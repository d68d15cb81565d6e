"""`spanbert run RECIPE`: recipes, the pipeline of stages, and the report of a pipeline directory.

recipe.py   TOML recipes → the stages' configs, checked whole (keys, values, every path named)
runner.py   the stages in order, each skipped when its artifact is up to date
report.py   lineage, metrics side by side, loss curves
"""
