"""What the W&B mirror keeps out of the dashboard: secrets, and only secrets."""

from harmcore.report.tracking import flatten, strip_secrets


def test_secrets_are_dropped_and_token_counts_kept():
    config = {
        "generation": {"max_new_tokens": 64},
        "data": {"response_tokens": 32},
        "datagen": {"prefill_tokens": 10},
        "eval": {"endpoint": {"api_key_env": "OPENAI_API_KEY", "api_key": "sk-secret", "model": "gpt"}},
        "hf_token": "hf_secret",
        "wandb": {"password": "pw", "client-secret": "cs", "apikey": "k"},
    }
    kept = flatten(strip_secrets(config))
    assert kept["generation/max_new_tokens"] == 64 and kept["data/response_tokens"] == 32
    assert kept["datagen/prefill_tokens"] == 10 and kept["eval/endpoint/api_key_env"] == "OPENAI_API_KEY"
    assert "secret" not in str(kept) and "pw" not in kept.values() and "k" not in kept.values()


def test_a_jobs_settings_are_read_from_its_folder_or_its_curves(tmp_path):
    """`.hydra/config.yaml` of the job, or of the job that walked several q for a point folder; {} (and
    no file) when neither has one or it does not parse, so reports go on with what was written."""
    from harmcore.files import job_settings, job_settings_file

    job = tmp_path / "job"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text("sparsities: [0.01, 0.02]\nmodel: {name: m}\n")
    point = job / "q=0.01"
    point.mkdir()
    assert job_settings_file(point) == job_settings_file(job) == job / ".hydra" / "config.yaml"
    assert job_settings(point) == job_settings(job) == {"sparsities": [0.01, 0.02], "model": {"name": "m"}}
    assert job_settings_file(tmp_path / "elsewhere" / "q=1") is None and job_settings(tmp_path / "elsewhere") == {}
    (job / ".hydra" / "config.yaml").write_text("sparsities: [0.01\n")  # cut off mid-write by hand
    assert job_settings(point) == {}
    (job / ".hydra" / "config.yaml").write_text("- a list\n")
    assert job_settings(job) == {}
