"""Demo stack: mock upstreams, certificates and process orchestration for make run and the tests."""
