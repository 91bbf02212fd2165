"""Demo code: tiny models and tokenizers built locally (`tiny`) and the offline quickstart (`quickstart`), for the
quickstart, the tests and the benchmarks. Nothing here is needed to unlearn a real model."""
