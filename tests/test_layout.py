"""The package's layers hold (the core never reaches up into the book's machinery), and the move into rooms lost
nothing: every committed result is found again under its own name by the code that would re-create it."""

import ast
import json
from pathlib import Path

import pytest

import fedmedlib
from fedmedlib.config import PROFILES
from fedmedlib.experiments import results, runs
from fedmedlib.fl import Experiment
from fedmedlib.privacy.recipe import DPRecipe

PACKAGE = Path(fedmedlib.__file__).parent
GROUND = {"config", "data", "partition", "models", "secagg", "augment"}
CORE = GROUND | {"train", "ceiling", "privacy", "fl"}
ABOVE = {"experiments", "book", "flower", "attacks", "cli", "__main__"}


def room(module: str) -> str:
    """'fedmedlib.fl.engine' -> 'fl'; the top-level room of a fedmedlib module."""
    return module.split(".")[1] if module.count(".") else "__init__"


def imports(path: Path) -> tuple[set[str], set[str]]:
    """(fedmedlib modules, other top-level packages) that `path` imports, lazy imports included."""
    name = "fedmedlib." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    if name.endswith(".__init__"):
        package = name = name[: -len(".__init__")]
    ours, others = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                (ours if alias.name.startswith("fedmedlib") else others).add(alias.name.split(".")[0]
                                                                              if not alias.name.startswith("fedmedlib")
                                                                              else alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                if node.module is None:
                    ours.update(f"{target}.{a.name}" for a in node.names)
                else:
                    ours.add(target)
            elif node.module and node.module.startswith("fedmedlib"):
                ours.add(node.module)
            elif node.module:
                others.add(node.module.split(".")[0])
    return ours, others


MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_every_module_keeps_the_layer_rules(path):
    here = room("fedmedlib." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
    ours, others = imports(path)
    rooms = {room(m) for m in ours} - {here, "__init__"}
    if here in CORE:
        assert not rooms & ABOVE, f"{path.name} ({here}) reaches up into {sorted(rooms & ABOVE)}"
    if here in GROUND:
        assert rooms <= GROUND, f"{path.name} (ground) imports {sorted(rooms - GROUND)}"
    if here == "train":
        assert rooms <= GROUND
    if here == "ceiling":
        assert rooms <= GROUND | {"train"}, f"{path.name}: the non-private ceiling stands on train and the ground only"
    if here == "privacy":
        assert "fl" not in rooms, f"{path.name}: privacy/ must not know about federated rounds"
    if here == "secagg":
        assert not rooms and "torch" not in others, f"{path.name}: secagg/ knows nothing outside itself, no torch"


def test_the_layer_rules_would_catch_a_violation(tmp_path):
    bad = PACKAGE / "privacy" / "_probe_violation.py"
    bad.write_text("from ..fl import Experiment\nfrom ..experiments import results\n")
    try:
        ours, _ = imports(bad)
        assert {room(m) for m in ours} >= {"fl", "experiments"}
    finally:
        bad.unlink()


def _key_of(result: dict):
    """The cache key the current code builds for a committed result, or None if it cannot say."""
    name, config = result["name"], result["config"]
    if name == "federated":
        fields = dict(config, dropout_schedule=tuple((r, tuple(ids)) for r, ids in config["dropout_schedule"]),
                      extra=tuple(tuple(x) for x in config["extra"]))
        return dict(Experiment(**fields).to_dict(), profile=result["profile"])
    if name == "dp_recipe":
        return runs.dp_recipe_key(DPRecipe(**config["recipe"]), seed=result["seed"], epsilon=config["epsilon"],
                                  delta=config["delta"], train_subset=config["train_subset"],
                                  eval_subset=config["eval_subset"])
    if name == "centralized":
        for profile in PROFILES.values():
            key = runs.centralized_config(profile, config["model"], result["seed"])
            if results.config_hash(key) == result["config_hash"]:
                return key
        return None
    if name == "dp_centralized":
        for profile in PROFILES.values():
            key = runs.dp_centralized_config(profile, result["seed"], batch_size=config["batch_size"],
                                             clip=config["clip"], epsilon=config["epsilon"])
            if results.config_hash(key) == result["config_hash"]:
                return key
        return None
    if name == "ceiling":
        from fedmedlib.ceiling import CeilingRecipe
        from fedmedlib.experiments import ceiling_search

        return ceiling_search.key(CeilingRecipe(**config["recipe"]), result["seed"],
                                  config["train_subset"], config["eval_subset"])
    return config  # attack results: the stored config is the key


FILES = sorted(results.results_dir().glob("*.json"))


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_committed_result_loads_under_its_own_hash(path):
    result = json.loads(path.read_text())
    key = _key_of(result)
    assert key is not None, f"{path.name}: no profile's settings give its hash"
    assert results.result_path(result["name"], key) == path
    assert results.load(result["name"], key) is not None
