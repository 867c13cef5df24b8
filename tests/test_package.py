"""The package itself: what `import nnfun` makes reachable, lists and leaves alone.

Each check runs in a fresh interpreter, so that modules imported by other tests
in this process cannot make it pass.
"""

import ast
import importlib.metadata
import json
import pathlib
import re
import subprocess
import sys
import textwrap
import tomllib

import nnfun as nf


def _python(program: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(program)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_subpackages_are_attributes_after_import_nnfun():
    result = _python(
        """
        import json
        import nnfun as nf
        print(json.dumps([
            nf.data.mnist1d.__name__,
            nf.models.GPT.__name__,
            sorted(nf.models.mnist1d.RECIPES)[:1],
            nf.testing.check_layer.__name__,
        ]))
        """
    )
    assert result == ["mnist1d", "GPT", ["cnn"], "check_layer"]


def test_import_needs_only_the_core_dependencies():
    # None in sys.modules makes `import mnist1d` raise ImportError, as if not installed.
    result = _python(
        """
        import json, sys
        optional = ["mnist1d", "sklearn", "num2words", "sacrebleu", "safetensors", "matplotlib",
                    "torch", "orbax"]
        for name in optional:
            sys.modules[name] = None
        import nnfun as nf
        nf.data, nf.models, nf.testing
        print(json.dumps([name for name in optional if sys.modules.get(name) is not None]))
        """
    )
    assert result == []


def test_all_lists_every_public_name():
    result = _python(
        """
        import json
        import nnfun as nf
        public = sorted(name for name in vars(nf) if not name.startswith("_"))
        print(json.dumps({"all": nf.__all__, "public": public}))
        """
    )
    assert result["all"] == result["public"]
    assert {"Dense", "Sequential", "fit", "data", "models", "testing"} <= set(result["all"])
    assert "retain_host_memory" not in result["all"] and "host_memory" not in result["all"]


def test_help_shows_the_public_names():
    result = _python(
        """
        import json, pydoc
        import nnfun
        text = pydoc.render_doc(nnfun, renderer=pydoc.plaintext)
        print(json.dumps({name: name in text for name in ("Dense", "fit", "data", "testing")}))
        """
    )
    assert all(result.values()), result


def _distribution_name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_every_third_party_import_is_a_declared_core_dependency():
    root = pathlib.Path(nf.__file__).parent
    declared = {
        _distribution_name(r)
        for r in tomllib.loads((root.parent / "pyproject.toml").read_text())["project"][
            "dependencies"
        ]
    }
    imported = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"nnfun", "__future__"}
    providers = importlib.metadata.packages_distributions()
    undeclared = {
        module
        for module in third_party
        if not {_distribution_name(d) for d in providers.get(module, [module])} & declared
    }
    assert not undeclared, f"imported by nnfun but not in [project] dependencies: {undeclared}"
