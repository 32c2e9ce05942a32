"""aloekit's medical benchmarks as lm-eval 0.4 tasks (`aloe_medqa`, ..., group `aloe_medical`): a folder for lm-eval's
`--include_path` (`aloekit eval --lm-eval-tasks-path` prints it). Each task reads its benchmark's original file
through aloekit's benchmark layer (utils.py) and scores it with the prompt of `aloekit eval --scoring loglik`."""
