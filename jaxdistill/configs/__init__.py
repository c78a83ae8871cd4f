"""The experiment configs that ship with jaxdistill: one file per recipe, each `get_config(preset)`.

`jaxdistill distill --config homodistil:smoke` finds `homodistil.py` here from any folder; a path
(`--config my_configs/x.py:preset`) works too. `common` holds the pieces the configs share.
"""
