"""Process concerns of `pier serve`: logging, Prometheus metrics and garbage-collection tuning.
Below the API and the writer, which both feed them."""
