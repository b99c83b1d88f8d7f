import subprocess
from importlib import metadata
from pathlib import Path

from harmcore.run import provenance as pipeline
from harmcore.run.config import Config


def test_provenance_records_the_libraries_and_the_checkout():
    prov = pipeline.provenance(Config())
    packages = prov["packages"]
    assert packages["numpy"] == metadata.version("numpy") and packages["lm_eval"] == metadata.version("lm_eval")
    assert packages["hydra"] == "hydra-core " + metadata.version("hydra-core")  # a distribution of another name
    assert packages["vllm"].split()[-1] == metadata.version(metadata.packages_distributions()["vllm"][0])
    assert set(prov["packages"]) <= set(pipeline.PROVENANCE_PACKAGES)
    repo = Path(pipeline.__file__).parent
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout (CI's clone is one); an installed wheel records nulls
        assert prov["git_sha"] == head.stdout.strip() and isinstance(prov["git_dirty"], bool)
    else:
        assert prov["git_sha"] is None and prov["git_dirty"] is None
