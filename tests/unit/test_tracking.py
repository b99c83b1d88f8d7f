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
