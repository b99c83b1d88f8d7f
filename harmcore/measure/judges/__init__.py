"""Judges of model responses.

refusal.py       keyword refusal judge (Wei et al.'s rule, and a corrected one)
strongreject.py  the StrongREJECT fine-tuned classifier (a local model)
endpoint.py      LLM judges through an OpenAI-compatible endpoint, by name (ENDPOINT_JUDGES)
client.py        the endpoint client: retries, concurrency, a judgement cache
parsing.py       reading a judge's answer (rubric, 0-100 score, logprobs, yes/no)
"""
