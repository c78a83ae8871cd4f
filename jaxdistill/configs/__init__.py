"""The experiment configs that ship with jaxdistill: one file per recipe, each `get_config(preset)`.

`jaxdistill distill --config homodistil:smoke` finds `homodistil.py` here from any folder; a path
(`--config my_configs/x.py:preset`) works too. Each recipe file states its paper's settings once, in its
`recipe(...)` function (weights, temperature, matches, layer maps, stages; "(assumed)" where the paper leaves
them open), which its presets, the tests and the README use:

    from jaxdistill.configs import tinybert
    recipe_cfg = tinybert.recipe(stage="general")      # or paper_recipe("tinybert", stage="general")

`common` holds the pieces the configs share (corpora, training scales, students, the offline teacher) and
`demo` the setup of `jaxdistill demo`; neither is an experiment (no get_config).
"""
from __future__ import annotations

import importlib

from jaxdistill.errors import ConfigError

RECIPES = ("hinton", "logit_mse", "pkd", "distilbert", "tinybert", "mobilebert", "minilm", "minilmv2",
           "homodistil")


def paper_recipe(name: str, **kwargs):
    """The recipe config of `name` with its paper's settings: `jaxdistill.configs.<name>.recipe(**kwargs)`
    (kwargs: `stage` for tinybert and mobilebert, `data` for hinton, logit_mse and pkd)."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; known recipes: {list(RECIPES)}")
    return importlib.import_module(f"jaxdistill.configs.{name}").recipe(**kwargs)
