"""``model-rollout``: canary rollouts and A/B experiments of KServe InferenceServices, decided on
evidence from Prometheus; it reads what the model server exports and configures its predictor,
and knows nothing of the model server's code."""
